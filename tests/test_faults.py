"""Faults while ``python -m extractor apply`` runs: signals, layers that stop or vanish, EACCES.

Timing is made deterministic with pipes: the test is the layer's writer. It
sends the first entries and part of a large file, waits until the marker
entry exists in DEST (so the engine is mid-layer, blocked reading), then
signals the process, closes the pipe early or removes a later layer's file.
Every fault must end with its documented exit status and exactly one
``extractor: error: ...`` line on stderr, never a traceback. (Disk full is
covered in tests/test_cli.py; ``--atomic`` elsewhere.)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
import zstandard
from builders import MTIME, Layer
from conftest import AS_NOBODY, NOBODY

MODULE = [sys.executable, "-m", "extractor"]
BIG = 16 << 20  # bytes of the large file the writer stops inside
SENT = 4 << 20  # bytes of it sent before the fault
WAIT = 20.0  # seconds to wait for the engine to reach the marker
EXIT_WAIT = 5.0  # seconds a signalled or failed process may take to exit


NOISE = hashlib.shake_256(b"faults").digest(BIG)  # incompressible: sizes stay predictable


def _stream(compression: str) -> bytes:
    """A layer: ``marker`` (tiny), then ``big`` (16 MiB of noise), then ``after``."""
    layer = Layer().file("marker", b"m\n").file("big", NOISE)
    layer.file("after", b"a\n")
    raw = layer.tar()
    if compression == "gzip":
        return gzip.compress(raw, compresslevel=1, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(raw)
    return raw


def _prefix(data: bytes) -> bytes:
    """Enough of ``data`` (4 MiB: more than the engine's 1 MiB reads) to get it into ``big``."""
    return data[:SENT]


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


def _one_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("extractor: error: "), text
    return lines[0]


def _feed(pipe: IO[bytes], data: bytes) -> threading.Thread:
    """Write ``data`` to ``pipe`` in a thread (it blocks until the engine reads)."""

    def write() -> None:
        try:
            pipe.write(data)
            pipe.flush()
        except (BrokenPipeError, ValueError):
            pass

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


SIGNALS = [
    pytest.param(signal.SIGINT, 130, "interrupted", id="SIGINT"),
    pytest.param(signal.SIGTERM, 143, "terminated", id="SIGTERM"),
]


@contextmanager
def _applying(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``extractor apply -q ARGS`` running, stderr piped; killed if it outlives the block."""
    proc = subprocess.Popen([*MODULE, "apply", "-q", *args], stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("signum", "status", "word", "compression"),
    [
        pytest.param(signal.SIGINT, 130, "interrupted", "none", id="SIGINT-tar"),
        pytest.param(signal.SIGTERM, 143, "terminated", "none", id="SIGTERM-tar"),
        pytest.param(signal.SIGTERM, 143, "terminated", "gzip", id="SIGTERM-gzip"),
        pytest.param(signal.SIGINT, 130, "interrupted", "zstd", id="SIGINT-zstd"),
    ],
)
def test_signal_mid_layer_from_stdin(
    tmp_path: Path, signum: int, status: int, word: str, compression: str
) -> None:
    """A signal while a layer streams from a pipe: its exit status, one line, no traceback."""
    dest = tmp_path / "rootfs"
    data = _stream(compression)
    proc = subprocess.Popen(
        [*MODULE, "apply", "--no-progress", str(dest), "-"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    try:
        writer = _feed(proc.stdin, _prefix(data))
        _wait_for(dest / "marker", proc)
        time.sleep(0.2)  # let it block on the pipe again
        assert proc.poll() is None, "finished before the signal: the layer was not held back"
        proc.send_signal(signum)
        # The writer keeps the pipe open (a slow producer): the exit must not wait for it.
        proc.wait(timeout=EXIT_WAIT)
        err = proc.stderr.read() if proc.stderr else b""
        writer.join(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
    assert proc.returncode == status, err.decode()
    assert _one_line(err) == f"extractor: error: {word}"
    assert not (dest / "after").exists()


@pytest.mark.parametrize(("signum", "status", "word"), SIGNALS)
def test_signal_mid_layer_from_fifo(tmp_path: Path, signum: int, status: int, word: str) -> None:
    """The same with the layer named on the command line as a FIFO (a slow file)."""
    fifo = tmp_path / "layer.tar"
    os.mkfifo(fifo)
    dest = tmp_path / "rootfs"
    with _applying(str(dest), str(fifo)) as proc, open(fifo, "wb") as writer:
        thread = _feed(writer, _prefix(_stream("none")))
        _wait_for(dest / "marker", proc)
        time.sleep(0.2)
        proc.send_signal(signum)
        proc.wait(timeout=EXIT_WAIT)  # with the writer still there
        err = proc.stderr.read() if proc.stderr else b""
        thread.join(timeout=WAIT)
    assert proc.returncode == status, err.decode()
    assert _one_line(err) == f"extractor: error: {word}"


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_layer_whose_writer_stops_early_is_bad_input(tmp_path: Path, compression: str) -> None:
    """A FIFO layer whose writer closes inside ``big``: exit 3, one line naming layer and entry."""
    fifo = tmp_path / f"layer.{compression}"
    os.mkfifo(fifo)
    dest = tmp_path / "rootfs"
    with _applying(str(dest), str(fifo)) as proc:
        with open(fifo, "wb") as writer:
            thread = _feed(writer, _prefix(_stream(compression)))
            _wait_for(dest / "marker", proc)
            thread.join(timeout=WAIT)
        # The writer is gone: the engine sees the end of data inside ``big``.
        _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 3, err.decode()
    line = _one_line(err)
    assert line.startswith(f"extractor: error: layer 1/1 ({fifo}) entry big: "), line
    assert "truncated" in line, line


def test_later_layer_file_vanishing_before_its_turn_is_not_found(tmp_path: Path) -> None:
    """Layers 2 and 3 are deleted while layer 1 (a FIFO) streams. Layer 2 was
    opened when layer 1 began (to decode it early), so it is still read whole;
    layer 3 is opened only when layer 2 begins: exit 4, one line naming it."""
    fifo = tmp_path / "1.tar"
    os.mkfifo(fifo)
    second = Layer().file("second", b"2\n").write(tmp_path / "2.tar")
    third = Layer().file("third", b"3\n").write(tmp_path / "3.tar")
    dest = tmp_path / "rootfs"
    with _applying(str(dest), str(fifo), str(second), str(third)) as proc:
        with open(fifo, "wb") as writer:
            data = _stream("none")
            thread = _feed(writer, _prefix(data))
            _wait_for(dest / "marker", proc)
            second.unlink()
            third.unlink()
            thread.join(timeout=WAIT)
            writer.write(data[SENT:])
        _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 4, err.decode()
    line = _one_line(err)
    assert line.startswith(f"extractor: error: layer 3/3 ({third})"), line
    assert "no such file" in line, line
    assert (dest / "after").read_bytes() == b"a\n"
    assert (dest / "second").read_bytes() == b"2\n"
    assert not (dest / "third").exists()


def test_bad_entry_mid_layer_exits_while_the_writer_is_still_there(tmp_path: Path) -> None:
    """A refused entry early in a FIFO layer whose writer is slow: exit 5 at once, one line."""
    fifo = tmp_path / "layer.tar"
    os.mkfifo(fifo)
    dest = tmp_path / "rootfs"
    bad = Layer().file("marker", b"m\n").symlink("a", "b").symlink("b", "a").file("a/x", b"x")
    data = bad.tar()[:-1024] + _stream("none")  # a loop, then 16 MiB more
    with _applying(str(dest), str(fifo)) as proc, open(fifo, "wb") as writer:
        thread = _feed(writer, _prefix(data))
        proc.wait(timeout=EXIT_WAIT)
        err = proc.stderr.read() if proc.stderr else b""
        thread.join(timeout=WAIT)
    assert proc.returncode == 5, err.decode()
    assert "entry a/x: " in _one_line(err)


def _ro_root_dir_case(shm_dir: Path, entry: str) -> tuple[Path, Path]:
    dest = shm_dir / "rootfs"
    (dest / "ro").mkdir(parents=True)
    os.chown(dest, NOBODY, NOBODY)
    os.chmod(dest / "ro", 0o555)  # root-owned and read-only: nobody cannot write into it
    info = tarfile.TarInfo(entry)
    info.size = 2
    info.mtime = MTIME
    layer = Layer().file("ok", b"fine\n").add(info, b"x\n")
    return dest, layer.write(shm_dir / "layer.tar")


@pytest.mark.root
@pytest.mark.parametrize("entry", ["ro/file", "ro/sub/file"])
def test_permission_denied_inside_dest_as_non_root(shm_dir: Path, entry: str) -> None:
    """As uid 65534 into a DEST holding a root-owned 0555 dir: exit 1, one line naming it."""
    dest, layer = _ro_root_dir_case(shm_dir, entry)
    cmd = [*AS_NOBODY, *MODULE, "apply", "-q", str(dest), str(layer)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(cmd, cwd=shm_dir, env=env, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr.decode()
    line = _one_line(proc.stderr)
    assert line.startswith(f"extractor: error: layer 1/1 ({layer}) entry {entry}: "), line
    assert "ermission denied" in line, line
    assert (dest / "ok").read_bytes() == b"fine\n"
    assert os.listdir(dest / "ro") == []


def test_stream_helpers_are_consistent() -> None:
    """The prefix sent before a fault ends inside ``big`` (so the fault lands mid-entry)."""
    for how in ("none", "gzip", "zstd"):
        data = _stream(how)
        assert 0 < len(_prefix(data)) < len(data)
    with tarfile.open(fileobj=io.BytesIO(_stream("none"))) as tf:
        assert tf.getnames() == ["marker", "big", "after"]
