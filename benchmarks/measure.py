"""Running one command as a whole process: wall time, CPU time, peak RSS; and RSS sampling.

Peak RSS comes from GNU time (``/usr/bin/time -f %M``) when it is installed, else from the
``rusage`` that ``wait4`` returns for the child, in a small wrapper. Both give the largest
resident set of one process in the command's tree (for ``sh -c 'a | b'`` the largest of
``sh``, ``a`` and ``b``, not their sum).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

GNU_TIME = "/usr/bin/time"


@dataclass
class Sample:
    """One timed run."""

    wall: float
    cpu: float | None  # user + system seconds of the process tree
    rss_kib: int | None
    returncode: int
    error: str = ""


# Without GNU time: a small wrapper spawns the command and reports what wait4 says. A child's
# ru_maxrss starts from the RSS of the process that spawned it (exec keeps the old high-water
# mark), so the spawner must be small: this bare interpreter, not the harness.
_WAIT4_WRAPPER = """
import os, sys, time
t = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, ru = os.wait4(pid, 0)
t = time.perf_counter() - t
with open(sys.argv[1], "w") as f:
    code = os.waitstatus_to_exitcode(status)
    f.write(f"{t} {ru.ru_utime + ru.ru_stime} {ru.ru_maxrss} {code}")
"""


def have_gnu_time() -> bool:
    if not os.access(GNU_TIME, os.X_OK):
        return False
    proc = subprocess.run(
        [GNU_TIME, "-f", "%M", "true"], capture_output=True, text=True, check=False
    )
    return proc.returncode == 0 and proc.stderr.strip().isdigit()


def _first_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def run(argv: list[str], use_gnu_time: bool) -> Sample:
    """Runs ``argv`` to completion with stdout discarded and stderr kept for a failure message."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as out:
        if use_gnu_time:
            full = [GNU_TIME, "-f", "%e %U %S %M", "-o", out.name, *argv]
            started = time.perf_counter()
            proc = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=err, check=False)
            wall = time.perf_counter() - started
            lines = [line for line in out.read().split("\n") if line.strip()]
            fields = lines[-1].split() if lines else []
            cpu: float | None = None
            rss: int | None = None
            if len(fields) == 4:
                cpu = float(fields[1]) + float(fields[2])
                rss = int(fields[3])
            code = proc.returncode
        else:
            full = [sys.executable, "-S", "-c", _WAIT4_WRAPPER, out.name, *argv]
            subprocess.run(full, stdout=subprocess.DEVNULL, stderr=err, check=False)
            fields = out.read().split()
            wall, cpu, rss, code = (
                float(fields[0]),
                float(fields[1]),
                int(fields[2]),
                int(fields[3]),
            )
        error = ""
        if code != 0:
            err.seek(0)
            error = _first_error_line(err.read().decode("utf-8", "replace"))
    return Sample(wall, cpu, rss, code, error)


def tree_size(path: str) -> tuple[int, int]:
    """(entries below ``path``, bytes of regular files counted once per inode)."""
    entries = 0
    seen: set[int] = set()
    size = 0
    stack = [path]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                entries += 1
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    if st.st_ino not in seen:
                        seen.add(st.st_ino)
                        size += st.st_size
    return entries, size


def clear(path: str) -> None:
    """Removes ``path`` whatever it is (the time this takes is never measured)."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.exists(path):
        shutil.rmtree(path)


def read_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) of a live process; empty once it has exited."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


@dataclass
class Curve:
    """RSS samples of one process."""

    times: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    hwm_kib: int = 0
    wall: float = 0.0
    returncode: int = 0
    error: str = ""


def sample_rss(argv: list[str], interval: float = 0.2) -> Curve:
    """Runs ``argv`` (not through a shell) and samples its VmRSS every ``interval`` seconds."""
    curve = Curve()
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        while child.poll() is None:
            status = read_status(child.pid)
            if "VmRSS" in status:
                curve.times.append(time.perf_counter() - started)
                curve.rss_kib.append(status["VmRSS"])
                curve.hwm_kib = max(curve.hwm_kib, status.get("VmHWM", 0))
            time.sleep(interval)
        curve.wall = time.perf_counter() - started
        curve.returncode = child.returncode
        if child.returncode != 0:
            err.seek(0)
            curve.error = _first_error_line(err.read().decode("utf-8", "replace"))
    return curve
