"""The compiled build (``make native``): used when current, never when it lags.

Each case imports the package in a fresh interpreter, since the choice is
made once, at import.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import extractor
from extractor import native

PACKAGE = Path(extractor.__file__).parent
BUILT = [name for name in native.NATIVE if native._compiled_file(name)]
needs_build = pytest.mark.skipif(
    len(BUILT) != len(native.NATIVE),
    reason="no compiled build next to the sources (`make native` makes one; `make test` does)",
)
PROBE = (
    "import extractor, extractor.native as n, extractor.rootfs as r; "
    "print(n.compiled(), r.__file__)"
)


def _probe(top: Path, **env: str) -> tuple[bool, str, str]:
    """Import the package found under ``top``; (compiled?, rootfs's file, stderr)."""
    run = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=top,
        env={**os.environ, "PYTHONPATH": str(top), "EXTRACTOR_PURE": "", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    compiled, rootfs = run.stdout.split()
    return compiled == "True", rootfs, run.stderr


def _copy_package(tmp_path: Path) -> Path:
    copy = tmp_path / "extractor"
    # copy2 keeps the times, so the copy is as current as the checkout.
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@needs_build
def test_a_current_build_is_used(tmp_path: Path) -> None:
    """What ``make test`` tests first, and what the benchmarks time, is the compiled build."""
    _copy_package(tmp_path)
    compiled, rootfs, err = _probe(tmp_path)
    assert compiled and not rootfs.endswith(".py"), rootfs
    assert "lag" not in err


@needs_build
def test_pure_runs_the_sources(tmp_path: Path) -> None:
    _copy_package(tmp_path)
    compiled, rootfs, err = _probe(tmp_path, EXTRACTOR_PURE="1")
    assert not compiled and rootfs == str(tmp_path / "extractor" / "rootfs.py")
    assert err == ""  # asked for: no warning


@needs_build
@pytest.mark.parametrize("edited", ["rootfs", "paths"])
def test_a_source_newer_than_its_build_runs_the_sources(tmp_path: Path, edited: str) -> None:
    """An edit after the build must never leave the old compiled code running:
    all the compiled modules give way, since they call each other directly."""
    copy = _copy_package(tmp_path)
    compiled_file = native._compiled_file(edited)
    assert compiled_file is not None
    later = os.stat(compiled_file).st_mtime + 1
    os.utime(copy / f"{edited}.py", (later, later))
    compiled, rootfs, err = _probe(tmp_path)
    assert not compiled and rootfs.endswith("rootfs.py")
    assert f"the compiled {edited} lag their sources" in err
    assert "make native" in err


@needs_build
def test_a_missing_compiled_module_runs_the_sources(tmp_path: Path) -> None:
    copy = _copy_package(tmp_path)
    compiled_file = native._compiled_file("tarstream")
    assert compiled_file is not None
    (copy / os.path.basename(compiled_file)).unlink()
    compiled, _, err = _probe(tmp_path)
    assert not compiled and "tarstream" in err


def test_without_a_build_nothing_is_stale(tmp_path: Path) -> None:
    copy = _copy_package(tmp_path)
    for built in copy.glob("*.so"):
        built.unlink()
    compiled, rootfs, err = _probe(tmp_path)
    assert not compiled and rootfs.endswith("rootfs.py") and err == ""


@pytest.mark.skipif(not native.compiled(), reason="the compiled build is not in use (sources run)")
@pytest.mark.parametrize("cls", ["model.Entry", "changeset.Decision"])
def test_per_entry_records_are_made_by_compiled_code(cls: str) -> None:
    """One of each is made per entry. A dataclass-generated ``__init__`` is a Python
    function that runs interpreted even in a compiled module (about 1 µs an entry
    for ``Entry``); a written one is compiled."""
    module, name = cls.split(".")
    init = getattr(importlib.import_module(f"extractor.{module}"), name).__init__
    assert not isinstance(init, types.FunctionType), f"{cls}.__init__ runs interpreted"
