"""The command line, run as a user runs it: ``python -m extractor`` and the console script.

Covers what goes to stdout and stderr, the ``--report`` JSON, logging levels and
formats, reading a layer from stdin, usage errors, the exit status and one-line
message of every kind of failure, and the progress line on a terminal.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zstandard
from builders import Layer

TOP = Path(__file__).resolve().parent.parent
SCRIPT = TOP / ".venv" / "bin" / "extractor"
MODULE = [sys.executable, "-m", "extractor"]
INVOCATIONS = {"module": MODULE, "script": [str(SCRIPT)]}
BOTH = pytest.mark.parametrize("command", list(INVOCATIONS.values()), ids=list(INVOCATIONS))
SUMMARY = re.compile(r"^applied (\d+) layers?, ([\d,]+) entries, [\d.]+ MiB in [\d.]+ s -> (.+)$")


@dataclass
class Run:
    """A finished command: exit status and decoded output."""

    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """The lines on stderr."""
        return self.err.splitlines()


def run(args: list[str], command: list[str] = MODULE, stdin: bytes | None = None, **kw: Any) -> Run:
    """Run the command with ``args``; stdin is empty unless given."""
    proc = subprocess.run(
        [*command, *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=60,
        **kw,
    )
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert "Traceback" not in out + err, out + err
    return Run(proc.returncode, out, err)


def small_layer() -> Layer:
    """Two dirs, a file and a symlink."""
    return Layer().dir("etc").file("etc/hostname", b"box\n").dir("tmp", 0o1777).symlink("sh", "b")


# -- entry points -------------------------------------------------------------------------


def test_console_script_is_installed() -> None:
    """The console script exists in the venv and is executable."""
    assert SCRIPT.is_file()
    assert os.access(SCRIPT, os.X_OK)


def _buffered_env() -> dict[str, str]:
    """The environment with stdout block-buffered, as users have it (this machine's
    PYTHONUNBUFFERED would leave nothing for the final flush to do)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def _tree_of(root: Path, names: int) -> Path:
    """``root`` holding ``names`` empty files with 200-byte names (a long ``diff``)."""
    root.mkdir()
    for i in range(names):
        (root / f"{i:05d}{'x' * 195}").touch()
    return root


@BOTH
def test_quick_exit_flushes_all_output_to_a_pipe(tmp_path: Path, command: list[str]) -> None:
    """The process ends with ``os._exit`` (no interpreter teardown), after flushing:
    a pipe gets every line of an output several buffers long, and the status."""
    a = _tree_of(tmp_path / "a", 400)
    (tmp_path / "b").mkdir()
    result = run(["diff", str(a), str(tmp_path / "b")], command, env=_buffered_env())
    assert result.code == 1
    lines = result.out.splitlines()
    assert len(lines) == 400 and len(result.out) > 80_000
    assert lines[-1].startswith(f"00399{'x' * 195}: only in A")


@BOTH
def test_reader_gone_ends_quietly(tmp_path: Path, command: list[str]) -> None:
    """stdout closed by its reader (``| head``): nothing on stderr (no error line, no
    "Exception ignored" from a flush at exit), status 141 as after SIGPIPE."""
    a = _tree_of(tmp_path / "a", 400)
    (tmp_path / "b").mkdir()
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write
    try:
        proc = subprocess.run(
            [*command, "diff", str(a), str(tmp_path / "b")],
            stdin=subprocess.DEVNULL,
            stdout=w,
            stderr=subprocess.PIPE,
            timeout=60,
            env=_buffered_env(),
        )
    finally:
        os.close(w)
    err = proc.stderr.decode(errors="replace")
    assert (proc.returncode, err) == (128 + signal.SIGPIPE, "")


@BOTH
def test_output_lost_at_the_final_flush_is_an_error(tmp_path: Path, command: list[str]) -> None:
    """A short report still buffered when ``main`` returns, then refused by the device
    (ENOSPC from /dev/full): one error line and status 1, not a silent success."""
    layer = small_layer().write(tmp_path / "l.tar")
    args = ["apply", "-q", "--report", "-", str(tmp_path / "r"), str(layer)]
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            [*command, *args],
            stdin=subprocess.DEVNULL,
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=60,
            env=_buffered_env(),
        )
    assert proc.returncode == 1
    assert proc.stderr.decode().splitlines() == [
        "extractor: error: cannot write standard output: No space left on device"
    ]
    assert (tmp_path / "r" / "etc" / "hostname").read_bytes() == b"box\n"


@BOTH
def test_version_and_help(command: list[str]) -> None:
    """--version prints the version on stdout; apply --help documents the exit statuses."""
    version = run(["--version"], command)
    assert (version.code, version.out.strip()) == (0, "extractor 0.1.0")
    helped = run(["apply", "--help"], command)
    assert helped.code == 0
    for needle in ("DEST", "LAYER", "--report", "--rootless", "--uid-map", "exit status"):
        assert needle in helped.out


# -- success ------------------------------------------------------------------------------


@BOTH
def test_success_prints_one_summary_line_on_stderr(tmp_path: Path, command: list[str]) -> None:
    """A clean apply exits 0, prints nothing on stdout and one summary line on stderr."""
    one = small_layer().write(tmp_path / "one.tar.gz", "gzip")
    two = Layer().file("etc/hostname", b"new\n").write(tmp_path / "two.tar.zst", "zstd")
    dest = tmp_path / "rootfs"
    result = run(["apply", str(dest), str(one), str(two)], command)
    assert result.code == 0, result.err
    assert result.out == ""
    assert len(result.lines) == 1, result.err
    match = SUMMARY.match(result.lines[0])
    assert match, result.lines[0]
    assert match.groups() == ("2", "5", str(dest))
    assert (dest / "etc" / "hostname").read_bytes() == b"new\n"
    assert os.readlink(dest / "sh") == "b"


def test_quiet_prints_nothing(tmp_path: Path) -> None:
    """-q: a clean apply exits 0 with stdout and stderr both empty."""
    layer = small_layer().write(tmp_path / "l.tar")
    result = run(["apply", "-q", str(tmp_path / "rootfs"), str(layer)])
    assert (result.code, result.out, result.err) == (0, "", "")
    assert (tmp_path / "rootfs" / "etc" / "hostname").is_file()


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_layer_from_stdin(tmp_path: Path, compression: str) -> None:
    """'-' reads a layer (plain, gzip or zstd) from stdin, between layers read from files."""
    first = Layer().file("a", b"1").file("b", b"1").write(tmp_path / "first.tar")
    piped = Layer().file("b", b"2").whiteout("a").bytes(compression)
    last = Layer().file("c", b"3").write(tmp_path / "last.tar")
    dest = tmp_path / "rootfs"
    result = run(["apply", str(dest), str(first), "-", str(last), "--report", "-"], stdin=piped)
    assert result.code == 0, result.err
    assert sorted(os.listdir(dest)) == ["b", "c"]
    assert (dest / "b").read_bytes() == b"2"
    doc = json.loads(result.out)
    assert doc["layers"][1]["compression"] == compression
    assert doc["layers"][1]["digest"] == "sha256:" + hashlib.sha256(piped).hexdigest()


# -- the report ---------------------------------------------------------------------------


def _report_stack(tmp_path: Path) -> tuple[Path, Path, bytes, bytes]:
    l1 = (
        Layer()
        .dir("etc")
        .file("etc/passwd", b"root:x:0:\n")  # 10 bytes
        .file("etc/group", b"root\n")  # 5 bytes
        .hardlink("etc/passwd-", "etc/passwd")
        .file(".wh..wh.aufs", b"")  # AUFS bookkeeping: skipped
    )
    l2 = (
        Layer()
        .whiteout("etc/group")
        .opaque("var")
        .file("var/x", b"abc")
        .file("var/x", b"def")  # listed twice: a duplicate and a warning
    )
    p1 = l1.write(tmp_path / "l1.tar.gz", "gzip")
    p2 = l2.write(tmp_path / "l2.tar.zst", "zstd")
    return p1, p2, l1.tar(), l2.tar()


def test_report_file_schema_and_counts(tmp_path: Path) -> None:
    """--report FILE holds schema v1, per-layer digest/diff_id/counts, warnings and totals."""
    p1, p2, t1, t2 = _report_stack(tmp_path)
    dest = tmp_path / "rootfs"
    report = tmp_path / "report.json"
    result = run(["apply", str(dest), str(p1), str(p2), "--report", str(report)])
    assert result.code == 0, result.err
    assert result.out == ""
    doc = json.loads(report.read_text())
    assert doc["schema"] == "extractor.report/v1"
    assert doc["command"] == "apply"
    assert doc["dest"] == str(dest)
    assert doc["exit_code"] == 0
    assert "error" not in doc
    assert doc["rootless"] is (os.geteuid() != 0)
    first, second = doc["layers"]
    sha = lambda data: "sha256:" + hashlib.sha256(data).hexdigest()  # noqa: E731
    assert first["index"] == 0 and second["index"] == 1
    assert first["source"] == str(p1) and second["source"] == str(p2)
    assert (first["compression"], second["compression"]) == ("gzip", "zstd")
    assert first["digest"] == sha(p1.read_bytes())
    assert first["diff_id"] == sha(t1)
    assert second["digest"] == sha(p2.read_bytes())
    assert second["diff_id"] == sha(t2)
    assert first["size"] == p1.stat().st_size
    assert first["uncompressed_size"] == len(t1)
    keys = ("entries", "bytes", "whiteouts", "opaque_dirs", "hardlinks", "skipped", "warnings")
    assert {k: first[k] for k in keys} == {
        "entries": 5,
        "bytes": 15,
        "whiteouts": 0,
        "opaque_dirs": 0,
        "hardlinks": 1,
        "skipped": 1,
        "warnings": 0,
    }
    assert {k: second[k] for k in keys} == {
        "entries": 4,
        "bytes": 6,
        "whiteouts": 1,
        "opaque_dirs": 1,
        "hardlinks": 0,
        "skipped": 0,
        "warnings": 1,
    }
    assert (first["files"], first["dirs"], second["duplicates"]) == (2, 1, 1)
    totals = doc["totals"]
    assert {k: totals[k] for k in ("layers", "entries", "bytes", "warnings")} == {
        "layers": 2,
        "entries": 9,
        "bytes": 21,
        "warnings": 1,
    }
    assert isinstance(totals["seconds"], (int, float)) and totals["seconds"] >= 0
    assert [(w["layer"], w["path"], w["event"]) for w in doc["warnings"]] == [
        (1, "var/x", "duplicate_entry")
    ]
    assert (dest / "var" / "x").read_bytes() == b"def"


def test_report_to_stdout(tmp_path: Path) -> None:
    """--report - writes exactly the JSON document on stdout; the summary stays on stderr."""
    layer = small_layer().write(tmp_path / "l.tar")
    result = run(["apply", str(tmp_path / "rootfs"), str(layer), "--report", "-"])
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["schema"] == "extractor.report/v1"
    assert doc["totals"]["entries"] == 4
    assert doc["layers"][0]["diff_id"] == "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    assert len(result.lines) == 1 and SUMMARY.match(result.lines[0])


@pytest.mark.parametrize("target", ["file", "stdout"])
@pytest.mark.parametrize(
    ("bad", "code"),
    [("not-a-tar", 3), ("missing", 4)],
)
def test_report_records_failure(tmp_path: Path, target: str, bad: str, code: int) -> None:
    """On failure the report is still written, with the error, the exit status and layer 1."""
    good = small_layer().write(tmp_path / "good.tar")
    second = tmp_path / "second.tar"
    if bad == "not-a-tar":
        second.write_bytes(b"definitely not a tar archive\n" * 100)
    report = tmp_path / "report.json"
    where = str(report) if target == "file" else "-"
    result = run(["apply", str(tmp_path / "rootfs"), str(good), str(second), "--report", where])
    assert result.code == code
    doc = json.loads(report.read_text() if target == "file" else result.out)
    assert doc["schema"] == "extractor.report/v1"
    assert doc["exit_code"] == code
    error = doc["error"]
    assert error["layer"].startswith("2/2") and str(second) in error["layer"]
    assert error["message"] and error["message"] in result.err
    assert doc["layers"][0]["entries"] == 4
    assert doc["layers"][0]["diff_id"].startswith("sha256:")
    assert len(result.lines) == 1


# -- logs ---------------------------------------------------------------------------------


def _json_lines(err: str) -> list[dict[str, Any]]:
    """Every stderr line parsed as a JSON object with an event (fails on any other line)."""
    records = []
    for line in err.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON object on stderr under --log-format json: {line!r}")
        assert isinstance(record, dict) and "event" in record, line
        records.append(record)
    return records


def test_json_logs_one_layer_applied_per_layer(tmp_path: Path) -> None:
    """--log-format json -v logs one JSON layer_applied object per layer, with its digests."""
    one = small_layer().write(tmp_path / "one.tar.gz", "gzip")
    two = Layer().file("x", b"x").write(tmp_path / "two.tar")
    result = run(
        ["apply", str(tmp_path / "rootfs"), str(one), str(two), "--log-format", "json", "-v"]
    )
    assert result.code == 0, result.err
    records = _json_lines(result.err)
    applied = [r for r in records if r.get("event") == "layer_applied"]
    assert [r["layer"] for r in applied] == [0, 1]
    assert applied[0]["digest"] == "sha256:" + hashlib.sha256(one.read_bytes()).hexdigest()
    assert [r["entries"] for r in applied] == [4, 1]
    assert all(r["level"] == "info" for r in applied)
    assert not [r for r in records if r.get("event") == "entry"]


def test_json_logs_every_stderr_line_is_json(tmp_path: Path) -> None:
    """With --log-format json every stderr line is one JSON object, the summary included."""
    layer = small_layer().write(tmp_path / "l.tar")
    dest = tmp_path / "rootfs"
    result = run(["apply", str(dest), str(layer), "--log-format", "json", "-v"])
    assert result.code == 0, result.err
    records = _json_lines(result.err)
    assert len(records) == 2, result.err  # layer_applied and the summary
    assert records[0]["event"] == "layer_applied"
    assert str(dest) in json.dumps(records[1])


def test_json_logs_vv_one_entry_line_per_entry(tmp_path: Path) -> None:
    """-vv logs one 'entry' object per tar entry, in order, with its layer, path and kind."""
    one = small_layer().write(tmp_path / "one.tar")
    two = Layer().whiteout("sh").fifo("p").write(tmp_path / "two.tar")
    result = run(["apply", str(tmp_path / "r"), str(one), str(two), "--log-format", "json", "-vv"])
    assert result.code == 0, result.err
    entries = [r for r in _json_lines(result.err) if r.get("event") == "entry"]
    assert [(r["layer"], r["path"], r["kind"]) for r in entries] == [
        (0, "etc", "dir"),
        (0, "etc/hostname", "file"),
        (0, "tmp", "dir"),
        (0, "sh", "symlink"),
        (1, ".wh.sh", "file"),
        (1, "p", "fifo"),
    ]
    assert all(r["level"] == "debug" for r in entries)


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_default_level_logs_nothing_per_entry_or_layer(tmp_path: Path, fmt: str) -> None:
    """Without -v nothing is logged for entries or layers: stderr is just the summary."""
    layer = small_layer().write(tmp_path / "l.tar")
    result = run(["apply", str(tmp_path / "rootfs"), str(layer), "--log-format", fmt])
    assert result.code == 0, result.err
    assert len(result.lines) == 1, result.err
    if fmt == "console":
        assert SUMMARY.match(result.lines[0]), result.err
    else:
        (record,) = _json_lines(result.err)
        assert record["event"] not in ("entry", "layer_applied"), record


def test_console_verbose_logs_layer_and_entries(tmp_path: Path) -> None:
    """In console format -v adds a layer_applied line per layer, -vv an entry line per entry."""
    layer = small_layer().write(tmp_path / "l.tar")
    verbose = run(["apply", str(tmp_path / "a"), str(layer), "-v"])
    assert verbose.code == 0
    assert sum("layer_applied" in line for line in verbose.lines) == 1
    assert not any("etc/hostname" in line for line in verbose.lines)
    very = run(["apply", str(tmp_path / "b"), str(layer), "-vv"])
    assert very.code == 0
    assert sum("etc/hostname" in line for line in very.lines) == 1
    assert sum(" entry " in f" {line} " for line in very.lines) >= 4


def _python(code: str, *args: str) -> Run:
    """Run ``code`` in a fresh interpreter (nothing imported yet), with ``args``."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, timeout=60, check=False
    )
    return Run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


LOADED_AFTER_MAIN = (
    "import sys\n"
    "from extractor.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('structlog' in sys.modules, code)\n"
)


def test_structlog_is_loaded_only_for_a_line_that_is_logged(tmp_path: Path) -> None:
    """A run that logs nothing does not pay for importing structlog; one that logs does."""
    layer = small_layer().write(tmp_path / "l.tar")
    quiet = _python(LOADED_AFTER_MAIN, "apply", str(tmp_path / "a"), str(layer))
    assert quiet.out.split() == ["False", "0"], quiet.err
    assert SUMMARY.match(quiet.err.strip()), quiet.err
    verbose = _python(LOADED_AFTER_MAIN, "apply", str(tmp_path / "b"), str(layer), "-v")
    assert verbose.out.split() == ["True", "0"], verbose.err
    assert sum("layer_applied" in line for line in verbose.err.splitlines()) == 1, verbose.err


def test_library_logger_without_configure_shows_warnings_only() -> None:
    """A library caller that set nothing up gets warnings on stderr, not info lines."""
    code = (
        "from extractor import logs\n"
        "log = logs.get_logger()\n"
        "log.info('not_shown', n=1)\n"
        "log.warning('shown_warning', n=2)\n"
    )
    result = _python(code)
    assert result.code == 0, result.err
    assert "not_shown" not in result.err
    assert "shown_warning" in result.err and "n=2" in result.err


def test_an_applications_own_structlog_setup_decides() -> None:
    """Where the application configured structlog, its level and output are used."""
    code = (
        "import structlog, sys\n"
        "structlog.configure(processors=[structlog.processors.JSONRenderer()],\n"
        "    logger_factory=structlog.PrintLoggerFactory(sys.stdout))\n"
        "from extractor import logs\n"
        "logs.get_logger().info('layer_applied', layer=0)\n"
    )
    result = _python(code)
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"layer": 0, "event": "layer_applied"}


# -- usage errors -------------------------------------------------------------------------

USAGE = {
    "no-command": [],
    "unknown-command": ["frobnicate"],
    "apply-no-dest": ["apply"],
    "apply-no-layer": ["apply", "{dest}"],
    "unknown-option": ["apply", "{dest}", "{layer}", "--bogus"],
    "bad-uid-map": ["apply", "{dest}", "{layer}", "--uid-map", "a:b"],
    "zero-size-gid-map": ["apply", "{dest}", "{layer}", "--gid-map", "0:100000:0"],
    "bad-log-format": ["apply", "{dest}", "{layer}", "--log-format", "xml"],
    "report-needs-arg": ["apply", "{dest}", "{layer}", "--report"],
    "stdin-twice": ["apply", "{dest}", "-", "-"],
}


@pytest.mark.parametrize("args", list(USAGE.values()), ids=list(USAGE))
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    """A bad command line exits 2 with a message on stderr and touches nothing."""
    layer = small_layer().write(tmp_path / "l.tar")
    dest = tmp_path / "rootfs"
    argv = [a.format(dest=dest, layer=layer) for a in args]
    result = run(argv, stdin=layer.read_bytes())
    assert result.code == 2, result.err
    assert result.out == ""
    assert result.err.strip()
    assert not dest.exists()


# -- failures: exit status and one line naming layer and entry ------------------------------


def _retype(tar: bytes, flag: bytes) -> bytes:
    """The tar with its first header's typeflag replaced and the checksum recomputed."""
    block = bytearray(tar[:512])
    block[156:157] = flag
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block) + tar[512:]


NOISE = hashlib.shake_256(b"extractor").digest(300_000)


@dataclass
class Failure:
    """A failing command: the layers (name -> bytes, None = missing), what it must say."""

    layers: dict[str, bytes | None]
    code: int
    layer: int  # 1-based position of the failing layer
    entry: str | None = None
    words: tuple[str, ...] = ()
    args: list[str] = field(default_factory=list)


def _flip(data: bytes, offset: int) -> bytes:
    """``data`` with the low bit of one byte flipped."""
    return data[:offset] + bytes([data[offset] ^ 1]) + data[offset + 1 :]


def _text_layer() -> Layer:
    """A layer of compressible text files."""
    layer = Layer()
    for i in range(200):
        layer.file(f"f{i}", f"line {i} of some text\n".encode() * 50)
    return layer


def _gz(layer: Layer) -> bytes:
    return gzip.compress(layer.tar(), mtime=0)


FAILURES: dict[str, Callable[[], Failure]] = {
    "missing-layer-file": lambda: Failure(
        {"ok.tar": small_layer().tar(), "missing.tar": None}, 4, 2, None, ("no such file",)
    ),
    "not-a-tar": lambda: Failure(
        {"notes.txt": b"these are not the tar bytes you are looking for\n" * 64}, 3, 1
    ),
    "short-garbage": lambda: Failure({"tiny.tar": b"hello\n"}, 3, 1),
    "truncated-gzip": lambda: Failure(
        {"t.tar.gz": _gz(Layer().file("big", NOISE))[:150_000]}, 3, 1, "big", ("gzip",)
    ),
    "truncated-tar": lambda: Failure(
        {"t.tar": Layer().file("a", b"a").file("big", NOISE).tar()[:100_000]}, 3, 1, "big"
    ),
    "corrupt-gzip": lambda: Failure(
        {"c.tar.gz": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 200},
        3,
        1,
        None,
        ("gzip",),
    ),
    "corrupt-zstd": lambda: Failure(
        {"c.tar.zst": b"\x28\xb5\x2f\xfd" + b"\xfe\xed\xfa\xce" * 50}, 3, 1, None, ("zstd",)
    ),
    "corrupt-zstd-mid-stream": lambda: Failure(
        {
            "ok.tar.zst": zstandard.ZstdCompressor().compress(small_layer().tar()),
            # One flipped bit in stored data: only the frame's content checksum catches it.
            "mid.tar.zst": _flip(
                zstandard.ZstdCompressor(write_checksum=True).compress(
                    Layer().file("big", NOISE).tar()
                ),
                100_000,
            ),
        },
        3,
        2,
        None,
        ("zstd",),
    ),
    "corrupt-zstd-block": lambda: Failure(
        {"c.tar.zst": _flip(zstandard.ZstdCompressor().compress(_text_layer().tar()), 1300)},
        3,
        1,
        None,
        ("zstd",),
    ),
    "corrupt-gzip-mid-stream": lambda: Failure(
        {"c.tar.gz": _flip(_gz(_text_layer()), 2000)}, 3, 1, None, ("gzip",)
    ),
    "unsupported-type": lambda: Failure(
        {"z.tar": _retype(Layer(tarfile.USTAR_FORMAT).file("weird", b"").file("b").tar(), b"Z")},
        3,
        1,
        "weird",
        ("'Z'",),
    ),
    "malformed-whiteout-dotdot": lambda: Failure(
        {"w.tar": Layer().dir("etc").file("etc/.wh..", b"").tar()},
        5,
        1,
        "etc/.wh..",
        ("whiteout",),
    ),
    "malformed-whiteout-empty": lambda: Failure(
        {"w.tar": Layer().file(".wh.", b"").tar()}, 5, 1, ".wh.", ("whiteout",)
    ),
    "malformed-whiteout-dots": lambda: Failure(
        {"base.tar": small_layer().tar(), "w.tar": Layer().file("etc/.wh...", b"").tar()},
        5,
        2,
        "etc/.wh...",
        ("whiteout",),
    ),
    "root-type-change": lambda: Failure(
        {"r.tar": Layer().symlink(".", "/elsewhere").tar()}, 5, 1, ".", ("root",)
    ),
    "symlink-loop": lambda: Failure(
        {"loop.tar": Layer().symlink("a", "b").symlink("b", "a").file("a/f", b"x").tar()},
        5,
        1,
        "a/f",
        ("symbolic links",),
    ),
    "hardlink-missing-target": lambda: Failure(
        {"h.tar": Layer().file("a", b"a").hardlink("x", "nothere").tar()},
        3,
        1,
        "x",
        ("nothere",),
    ),
    "hardlink-to-directory": lambda: Failure(
        {"h.tar": Layer().dir("d").hardlink("x", "d").tar()}, 3, 1, "x", ("directory",)
    ),
    "uid-outside-map": lambda: Failure(
        {"u.tar": Layer().file("ok").file("srv/data", b"x", uid=70000).tar()},
        3,
        1,
        "srv/data",
        ("70000",),
        ["--uid-map", "0:100000:65536"],
    ),
}


def _check_error_line(result: Run, failure: Failure, paths: list[Path]) -> None:
    assert result.out == ""
    assert len(result.lines) == 1, result.err
    line = result.lines[0]
    where = f"layer {failure.layer}/{len(paths)} ({paths[failure.layer - 1]})"
    assert line.startswith(f"extractor: error: {where}"), line
    if failure.entry is not None:
        assert f"{where} entry {failure.entry}: " in line, line
    for word in failure.words:
        assert word in line, line


@BOTH
@pytest.mark.parametrize("case", list(FAILURES))
def test_failure_exit_status_and_one_line(tmp_path: Path, command: list[str], case: str) -> None:
    """Each kind of failure exits with its documented status and one line naming layer/entry."""
    failure = FAILURES[case]()
    paths = []
    for name, data in failure.layers.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        paths.append(path)
    dest = tmp_path / "rootfs"
    result = run(["apply", str(dest), *map(str, paths), *failure.args], command)
    assert result.code == failure.code, result.err
    _check_error_line(result, failure, paths)


@pytest.mark.root
def test_enospc_exit_1_naming_entry(tmp_path: Path) -> None:
    """Running out of space (a 1 MiB tmpfs) exits 1 with one line naming layer and entry."""
    small = tmp_path / "small"
    small.mkdir()
    layer = Layer().file("ok", b"fits").file("big", bytes(2 << 20)).write(tmp_path / "big.tar")
    report = tmp_path / "report.json"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        dest = small / "rootfs"
        result = run(["apply", str(dest), str(layer), "--report", str(report)])
        assert (dest / "ok").read_bytes() == b"fits"
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert result.code == 1, result.err
    failure = Failure({}, 1, 1, "big", ("No space left on device",))
    _check_error_line(result, failure, [layer])
    doc = json.loads(report.read_text())
    assert (doc["exit_code"], doc["error"]["entry"]) == (1, "big")


# -- progress on a terminal ---------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gzip layer of ~6000 small entries: applying it takes well over 0.2 s."""
    layer = Layer()
    for i in range(60):
        layer.dir(f"d{i}")
        for j in range(100):
            layer.file(f"d{i}/f{j}", b"x" * 1024)
    return layer.write(tmp_path_factory.mktemp("slow") / "slow.tar.gz", "gzip")


def _run_on_pty(args: list[str], stderr_file: Path | None = None) -> tuple[int, str]:
    """Run with stdin/stdout/stderr on a pseudo-terminal (stderr to a file if given)."""
    master, slave = pty.openpty()
    err_target = open(stderr_file, "wb") if stderr_file else slave  # noqa: SIM115
    try:
        proc = subprocess.Popen([*MODULE, *args], stdin=slave, stdout=slave, stderr=err_target)
    finally:
        os.close(slave)
        if stderr_file:
            err_target.close()  # type: ignore[union-attr]
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=60)
    text = b"".join(chunks).decode(errors="replace")
    if stderr_file:
        text = stderr_file.read_text()
    assert "Traceback" not in text
    return code, text


PROGRESS = re.compile(r"layer 1/1 \(.*slow\.tar\.gz\)\s+[\d.]+/[\d.]+ MiB\s+\d+ MiB/s")


def test_progress_line_on_terminal(tmp_path: Path, slow_layer: Path) -> None:
    """With stderr on a terminal a progress line is drawn, then erased before the summary."""
    code, text = _run_on_pty(["apply", str(tmp_path / "rootfs"), str(slow_layer)])
    assert code == 0, text
    assert PROGRESS.search(text), repr(text[-500:])
    last_progress = max(m.end() for m in PROGRESS.finditer(text))
    rest = text[last_progress:]
    assert rest.startswith("\r\x1b[K"), repr(rest[:80])
    assert SUMMARY.match(rest[len("\r\x1b[K") :].strip()), repr(rest)


@pytest.mark.parametrize("flag", ["redirected", "--no-progress", "-q"])
def test_no_progress_line_when_not_wanted(tmp_path: Path, slow_layer: Path, flag: str) -> None:
    """No progress line with stderr redirected to a file, with --no-progress, or with -q."""
    args = ["apply", str(tmp_path / "rootfs"), str(slow_layer)]
    if flag == "redirected":
        code, text = _run_on_pty(args, stderr_file=tmp_path / "stderr.txt")
    else:
        code, text = _run_on_pty([*args, flag])
    assert code == 0, text
    assert "MiB/s" not in text and "\x1b[K" not in text and "\r\x1b" not in text, repr(text)
    if flag == "-q":
        assert text == ""
    else:
        assert len(text.strip().splitlines()) == 1 and SUMMARY.match(text.strip()), repr(text)


def test_max_path_bytes_refuses_longer_paths(tmp_path: Path) -> None:
    """--max-path-bytes N refuses a longer entry path in one line (exit 3); the default takes it."""
    name = "/".join(["d" * 20] * 10) + "/leaf"  # 215 bytes
    layer = Layer().file(name, b"x").write(tmp_path / "l.tar")
    refused = run(["apply", str(tmp_path / "a"), str(layer), "--max-path-bytes", "100"])
    assert refused.code == 3
    assert refused.lines[-1].endswith("path is longer than 100 bytes")
    assert len(refused.lines) == 1
    taken = run(["apply", str(tmp_path / "b"), str(layer)])
    assert taken.code == 0, taken.err
    assert (tmp_path / "b" / name).read_bytes() == b"x"
