"""The README's examples really run, and the committed sample data is what its script makes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
README = (TOP / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_demo_data_is_reproducible() -> None:
    """testdata/make_demo.py --check finds the committed layers byte-identical."""
    proc = subprocess.run(
        [sys.executable, "testdata/make_demo.py", "--check"],
        cwd=TOP,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_shell_examples_run(tmp_path: Path) -> None:
    """The `extractor` commands in the README's sh blocks succeed, run in order in one place."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    commands = [
        c
        for block in _blocks("sh")
        for c in block.replace("\\\n", " ").splitlines()
        if c.strip().startswith(("extractor ", "python "))
    ]
    assert len(commands) >= 2
    work = tmp_path
    os.symlink(TOP / "testdata", work / "testdata")
    for command in commands:
        proc = subprocess.run(
            command.replace("python ", f"{sys.executable} ", 1),
            shell=True,
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"{command}: {proc.stderr}"
        assert "Traceback" not in proc.stderr


def test_readme_python_example_runs(tmp_path: Path) -> None:
    """The README's Python example runs and prints one line per layer."""
    (code,) = _blocks("python")
    os.symlink(TOP / "testdata", tmp_path / "testdata")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2
    assert (tmp_path / "rootfs" / "usr" / "libexec" / "git-core" / "git").is_file()
