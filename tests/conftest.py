"""Shared fixtures: temporary trees on tmpfs, and the canary that catches escapes."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from extractor import native

IS_ROOT = os.geteuid() == 0
# pyfakefs and monkeypatching reach into module globals and classes, which the
# compiled build (``make native``) does not look up at run time. ``make test``
# runs the suite a second time on the sources (EXTRACTOR_PURE=1), where these run.
interpreted_only = pytest.mark.skipif(
    native.compiled(),
    reason="patches what the compiled modules do not look up; runs in the EXTRACTOR_PURE=1 pass",
)
NOBODY = 65534  # the unprivileged user rootless tests run as
# Run a command as NOBODY with no supplementary groups (needs root).
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


_OUR_BASETEMP: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    # Trees are made and removed by the thousand; tmpfs is ~30x cheaper than this disk.
    if config.option.basetemp is None and os.path.isdir("/dev/shm"):
        config.option.basetemp = tempfile.mkdtemp(prefix="extractor-tests-", dir="/dev/shm")
        _OUR_BASETEMP.append(config.option.basetemp)


def pytest_unconfigure(config: pytest.Config) -> None:
    for path in _OUR_BASETEMP:
        shutil.rmtree(path, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_root = pytest.mark.skip(
        reason="needs uid 0 (ownership, devices, security xattrs); CI runs as root"
    )
    for item in items:
        if "root" in item.keywords and not IS_ROOT:
            item.add_marker(skip_root)


def snapshot(top: Path) -> dict[str, tuple[object, ...]]:
    """Everything observable about a tree: type, mode, owner, times, content, link target."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    extra = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            out[os.path.relpath(path, top)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                st.st_nlink,
                extra,
            )
    st = os.lstat(top)
    out["."] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
    return out


class Canary:
    """A host directory beside the root, full of files a layer must never touch.

    ``outside`` is its absolute path: point hostile symlinks at it (``etc ->
    <outside>``) or climb to it with ``..``; ``check()`` fails the test if
    anything in it was created, changed or removed.
    """

    def __init__(self, base: Path):
        self.base = base
        self.dest = base / "rootfs"
        self.outside = base / "outside"
        self.outside.mkdir()
        (self.outside / "passwd").write_text("host passwd\n")
        (self.outside / "victim").write_text("host file\n")
        (self.outside / "dir").mkdir()
        (self.outside / "dir" / "file").write_text("host nested\n")
        os.chmod(self.outside / "victim", 0o640)
        self._before = snapshot(self.outside)
        self._base_before = sorted(os.listdir(base))

    def check(self) -> None:
        """Fail if anything outside the root changed."""
        after = snapshot(self.outside)
        assert after == self._before, "HOST PATH WAS CHANGED: THIS IS A PATH ESCAPE"
        extra = sorted(set(os.listdir(self.base)) - {"rootfs", *self._base_before})
        assert not extra, f"files appeared beside the root: {extra}"


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Canary]:
    """A ``Canary``; its ``dest`` is the root to apply into. Checked after the test."""
    c = Canary(tmp_path)
    yield c
    c.check()


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """A world-traversable temporary directory on tmpfs (for tests that drop privileges)."""
    path = Path(tempfile.mkdtemp(prefix="extractor-", dir="/dev/shm"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
