"""``--order reverse``: newest layer first, skipping what newer layers settled (ggcr, old kaniko).

Each case builds real layers, applies them with ``apply_layers_reverse`` into a temporary
directory and checks the tree: what the newer layers hide, how hardlinks resolve against the
tree as it is at that moment (kaniko #282), what is only a warning, that every layer is read
once, and that the safety rules are the chronological ones (the ``canary`` fixture fails the
test if anything outside the root changes).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from builders import Layer
from conftest import Canary

from extractor import (
    BadInputError,
    LayerInput,
    UnsafeEntryError,
    apply_layers,
    logs,
)
from extractor.cli import main
from extractor.reverse import ReverseResult, apply_layers_reverse

TOP = Path(__file__).resolve().parent.parent
K282 = TOP / "testdata" / "kaniko282"
GIT = b"#!/bin/sh\necho git\n"


def rev(dest: Path, *layers: Layer) -> ReverseResult:
    """Apply ``layers`` (oldest first) newest first into ``dest``."""
    return apply_layers_reverse(dest, [io.BytesIO(layer.tar()) for layer in layers])


def kind(path: Path) -> str:
    """file, dir, symlink or missing (not following a final symlink)."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "dir" if stat.S_ISDIR(mode) else "file"


@pytest.fixture(autouse=True)
def _logging_to_this_tests_stderr() -> Iterator[None]:
    """In-process CLI runs reconfigure structlog; start each test fresh and leave no trace."""
    logs.configure(0, "console", sys.stderr)
    yield
    structlog.reset_defaults()


# --------------------------------------------------------------------------------------------
# What newer layers hide

Expect = dict[str, str | bytes]  # path -> kind, or the file's bytes

CASES: list[tuple[str, list[Layer], Expect]] = [
    (
        "a newer file hides an older one",
        [Layer().file("a", b"old"), Layer().file("a", b"new")],
        {"a": b"new"},
    ),
    (
        "a newer whiteout hides an older file and everything below an older directory",
        [
            Layer().file("f", b"old").dir("d").file("d/x", b"x"),
            Layer().whiteout("f").whiteout("d"),
        ],
        {"f": "missing", "d": "missing", "d/x": "missing"},
    ),
    (
        "a whiteout does not hide what its own layer writes, before or after it",
        [
            Layer().file("a", b"old").file("b", b"old"),
            Layer().file("a", b"same layer").whiteout("a").whiteout("b").file("b", b"again"),
        ],
        {"a": b"same layer", "b": b"again"},
    ),
    (
        "an opaque marker hides older entries below its directory, not the layer's own",
        [
            Layer().dir("d", mode=0o700).file("d/old", b"old"),
            Layer().file("d/new", b"new").opaque("d"),
        ],
        {"d": "dir", "d/old": "missing", "d/new": b"new"},
    ),
    (
        "a newer non-directory hides everything older below its name",
        [Layer().dir("d").file("d/x", b"x"), Layer().file("d", b"file now")],
        {"d": b"file now", "d/x": "missing"},
    ),
    (
        "a newer directory does not hide the older children of that name",
        [Layer().dir("d").file("d/x", b"x"), Layer().dir("d").file("d/y", b"y")],
        {"d/x": b"x", "d/y": b"y"},
    ),
    (
        "a newer symlink hides older entries below its name",
        [Layer().dir("etc").file("etc/passwd", b"root"), Layer().symlink("etc", "/nowhere")],
        {"etc": "symlink", "nowhere": "missing"},
    ),
    (
        "duplicates in one layer: the last one wins, as oldest first",
        [Layer().file("a", b"1").file("a", b"2"), Layer().file("b", b"b")],
        {"a": b"2", "b": b"b"},
    ),
    (
        "an older file replaces a directory the newer layers only implied (ggcr does too)",
        [Layer().file("a", b"older file"), Layer().file("a/b", b"newer")],
        {"a": b"older file", "a/b": "missing"},
    ),
    (
        "a hardlink listed before its target in the same layer is made once the target comes",
        [Layer().hardlink("l", "t").file("t", b"T"), Layer().file("other", b"o")],
        {"l": b"T", "t": b"T"},
    ),
]


@pytest.mark.parametrize(("name", "layers", "expect"), CASES, ids=[c[0] for c in CASES])
def test_reverse_rules(tmp_path: Path, name: str, layers: list[Layer], expect: Expect) -> None:
    """Newest first, each named stack leaves the expected tree."""
    rev(tmp_path / "r", *layers)
    for path, want in expect.items():
        full = tmp_path / "r" / path
        if isinstance(want, bytes):
            assert kind(full) == "file", path
            assert full.read_bytes() == want, path
        else:
            assert kind(full) == want, path


def test_kaniko_282_hardlink_is_made_to_the_newer_symlink(tmp_path: Path) -> None:
    """The lower hardlink links the upper symlink itself: a symlink pointing at itself, no git."""
    base = (
        Layer()
        .dir("usr/bin")
        .file("usr/bin/git", GIT, mode=0o755)
        .dir("usr/libexec/git-core")
        .hardlink("usr/libexec/git-core/git", "usr/bin/git")
    )
    upper = Layer().symlink("usr/bin/git", "/usr/libexec/git-core/git")
    result = rev(tmp_path / "r", base, upper)
    link = tmp_path / "r/usr/libexec/git-core/git"
    assert os.readlink(link) == "/usr/libexec/git-core/git"
    assert os.readlink(tmp_path / "r/usr/bin/git") == "/usr/libexec/git-core/git"
    assert os.lstat(link).st_ino == os.lstat(tmp_path / "r/usr/bin/git").st_ino
    assert not [p for p in (tmp_path / "r").rglob("*") if kind(p) == "file"]
    assert result.warnings == []
    assert [(c.path, c.kind) for c in result.conflicts or []] == [
        ("usr/bin/git", "symlink-loop"),
        ("usr/libexec/git-core/git", "symlink-loop"),
    ]
    # Oldest first, the same layers give git.
    apply_layers(tmp_path / "c", [io.BytesIO(base.tar()), io.BytesIO(upper.tar())])
    assert (tmp_path / "c/usr/libexec/git-core/git").read_bytes() == GIT


WARNINGS = [
    (
        "target from an older layer is not there yet",
        [Layer().file("t", b"T"), Layer().hardlink("l", "t")],
        "hardlink_target_missing",
        1,
    ),
    (
        "target whited out by a newer layer",
        [Layer().file("t", b"T").hardlink("l", "t"), Layer().whiteout("t")],
        "hardlink_target_missing",
        0,
    ),
    (
        "target hidden by a newer opaque marker",
        [Layer().file("d/t", b"T").hardlink("l", "d/t"), Layer().dir("d").opaque("d")],
        "hardlink_target_missing",
        0,
    ),
    (
        "target made a directory by a newer layer",
        [Layer().file("t", b"T").hardlink("l", "t"), Layer().dir("t")],
        "hardlink_target_not_a_file",
        0,
    ),
]


@pytest.mark.parametrize(
    ("name", "layers", "event", "layer"), WARNINGS, ids=[w[0] for w in WARNINGS]
)
def test_hardlink_without_a_file_target_is_a_warning(
    tmp_path: Path, name: str, layers: list[Layer], event: str, layer: int
) -> None:
    """A hardlink whose target is missing or a directory at that moment is skipped with a Notice."""
    result = rev(tmp_path / "r", *layers)
    assert kind(tmp_path / "r/l") == "missing"
    assert [(n.event, n.path, n.layer) for n in result.warnings] == [(event, "l", layer)]
    assert result.layers[layer].warnings == 1


def test_hardlink_to_a_newer_file_shares_the_newer_inode(tmp_path: Path) -> None:
    """An older link to a name a newer layer rewrote gets the newer bytes (ggcr #2002's kin)."""
    rev(tmp_path / "r", Layer().file("t", b"old").hardlink("l", "t"), Layer().file("t", b"new"))
    assert (tmp_path / "r/l").read_bytes() == b"new"
    assert os.stat(tmp_path / "r/l").st_ino == os.stat(tmp_path / "r/t").st_ino


def test_report_lists_layers_oldest_first_with_their_own_counts(tmp_path: Path) -> None:
    """Layers are applied newest first but reported in stack order, each with its counts."""
    result = rev(
        tmp_path / "r",
        Layer().file("a", b"1").file("b", b"1"),
        Layer().file("a", b"2").whiteout("b").opaque("d"),
    )
    assert [r.index for r in result.layers] == [0, 1]
    assert (result.layers[0].files, result.layers[0].skipped) == (0, 2)
    assert (result.layers[1].files, result.layers[1].whiteouts) == (1, 1)
    assert result.layers[1].opaque_dirs == 1
    assert result.order == "reverse"
    assert result.layers[0].diff_id.startswith("sha256:")


# --------------------------------------------------------------------------------------------
# Each layer read once, streaming, verified


class OneShot(io.RawIOBase):
    """A stream that can be read once, front to back, and never seeked."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.passes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.pos == 0:
            self.passes += 1
        chunk = self.data[self.pos : self.pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)

    def seekable(self) -> bool:
        return False


def test_each_layer_is_read_once_as_a_stream(tmp_path: Path) -> None:
    """Non-seekable streams work; each is opened in its turn and read to its end exactly once."""
    blobs = [Layer().file(f"f{i}", bytes([i]) * 5000).tar() for i in range(3)]
    streams = [OneShot(b) for b in blobs]
    opened: list[int] = []

    def opener(i: int) -> Callable[[], OneShot]:
        def open_() -> OneShot:
            opened.append(i)
            return streams[i]

        return open_

    result = apply_layers_reverse(tmp_path / "r", [LayerInput(opener(i)) for i in range(3)])
    assert opened == [2, 1, 0]
    assert [s.passes for s in streams] == [1, 1, 1]
    assert all(s.pos == len(b) for s, b in zip(streams, blobs, strict=True))
    assert (tmp_path / "r/f1").read_bytes() == b"\1" * 5000
    assert [r.diff_id for r in result.layers] == [
        "sha256:" + hashlib.sha256(b).hexdigest() for b in blobs
    ]


def test_diff_id_mismatch_is_refused_as_in_chronological_order(tmp_path: Path) -> None:
    """A LayerInput's DiffID is checked while streaming; a mismatch is bad input."""
    blob = Layer().file("a", b"a").tar()
    with pytest.raises(BadInputError, match="DiffID mismatch"):
        apply_layers_reverse(
            tmp_path / "r", [LayerInput(io.BytesIO(blob), diff_id="sha256:" + "0" * 64)]
        )


# --------------------------------------------------------------------------------------------
# Safety: the same rules as oldest first


def _escapes(outside: str) -> list[tuple[str, list[Layer], Expect]]:
    """Hostile stacks (oldest first) and where their entries must land inside the root."""
    inside = outside.lstrip("/")  # an absolute target resolves from the root, like a chroot
    return [
        (
            "a write through a same-layer symlink to the host lands inside",
            [Layer().symlink("etc", outside).file("etc/passwd", b"pwned"), Layer().dir("z")],
            {f"{inside}/passwd": b"pwned", "etc": "symlink"},
        ),
        (
            "an older symlink to the host replaces the directory a newer entry implied",
            [Layer().symlink("etc", outside), Layer().file("etc/victim", b"pwned")],
            {"etc": "symlink", f"{inside}/victim": "missing"},
        ),
        (
            "an older chain of symlinks ending at a newer host symlink",
            [Layer().symlink("p", "q").file("p/victim", b"pwned"), Layer().symlink("q", outside)],
            {"p": "symlink", f"{inside}/victim": b"pwned"},
        ),
        (
            "dot-dot names climb no higher than the root",
            [Layer().file("../../outside/victim", b"pwned"), Layer().file("a", b"a")],
            {"outside/victim": b"pwned"},
        ),
        (
            "an older hardlink through a newer symlink to the host finds no target",
            [Layer().hardlink("stolen", "d/victim"), Layer().symlink("d", outside)],
            {"stolen": "missing", "d": "symlink"},
        ),
        (
            "an older hardlink to a newer symlink to a host file links the symlink only",
            [
                Layer().hardlink("stolen", "t").file("t", b"t"),
                Layer().symlink("t", outside + "/victim"),
            ],
            {"stolen": "symlink", "t": "symlink"},
        ),
        (
            "a hardlink target with dot-dots stays inside and is missing",
            [Layer().file("a", b"a"), Layer().hardlink("stolen", "../../outside/victim")],
            {"stolen": "missing", "a": b"a"},
        ),
        (
            "whiteouts and opaque markers below a host symlink remove nothing",
            [
                Layer().symlink("h", outside),
                Layer().whiteout("h/victim").opaque("h/dir").whiteout("../outside/passwd"),
            ],
            {"h": "symlink"},
        ),
    ]


@pytest.mark.parametrize("index", range(8))
def test_reverse_order_stays_inside_the_root(canary: Canary, index: int) -> None:
    """Hostile stacks applied newest first land inside the root; the host is untouched."""
    name, layers, expect = _escapes(str(canary.outside))[index]
    rev(canary.dest, *layers)
    for path, want in expect.items():
        full = canary.dest / path
        if isinstance(want, bytes):
            assert full.read_bytes() == want, f"{name}: {path}"
        else:
            assert kind(full) == want, f"{name}: {path}"
    # The canary fixture then fails the test if anything outside the root changed.


def test_malformed_whiteout_is_refused_and_removes_nothing(canary: Canary) -> None:
    """A `.wh..` whiteout is an unsafe entry newest first too, and deletes nothing."""
    dest = canary.dest
    with pytest.raises(UnsafeEntryError, match="malformed whiteout"):
        rev(dest, Layer().file("keep", b"k"), Layer().file("a/.wh..", b""))
    assert not (dest / "keep").exists()  # the older layer was never reached


def test_symlink_loop_in_a_parent_is_a_clean_error(canary: Canary) -> None:
    """A parent that loops is refused (exit 5), as oldest first."""
    dest = canary.dest
    with pytest.raises(UnsafeEntryError, match="too many levels"):
        rev(dest, Layer().file("z", b"z"), Layer().symlink("a", "/a").file("a/x", b"x"))


@pytest.mark.parametrize("upper", ["symlink-to-host", "file", "hardlink"])
def test_root_type_change_is_refused(canary: Canary, upper: str) -> None:
    """A newer layer turning `.` into a symlink to the host, a file or a hardlink is refused."""
    layer = Layer()
    if upper == "symlink-to-host":
        layer.symlink(".", str(canary.outside)).file("passwd", b"pwned")
    elif upper == "file":
        layer.file(".", b"not a dir")
    else:
        layer.file("a", b"a").hardlink(".", "a")
    with pytest.raises(UnsafeEntryError, match="root directory"):
        rev(canary.dest, Layer().file("keep", b"k"), layer)
    assert not os.path.islink(canary.dest)
    assert not (canary.dest / "passwd").exists()


# --------------------------------------------------------------------------------------------
# The command line


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "extractor", *args], capture_output=True, text=True, cwd=TOP
    )


def test_cli_apply_order_reverse_report_has_conflicts(tmp_path: Path) -> None:
    """`apply --order reverse --report` writes the tree and a report with order and conflicts."""
    report = tmp_path / "report.json"
    code = main(
        [
            "apply",
            str(tmp_path / "r"),
            str(K282 / "1-alpine-git.tar"),
            str(K282 / "2-git-symlink.tar"),
            "--order",
            "reverse",
            "--report",
            str(report),
            "-q",
        ]
    )
    assert code == 0
    doc = json.loads(report.read_text())
    assert doc["order"] == "reverse"
    assert {c["path"]: (c["kind"], c["layers"]) for c in doc["conflicts"]} == {
        "usr/bin/git": ("symlink-loop", [1, 2]),
        "usr/libexec/git-core/git": ("symlink-loop", [1, 2]),
    }
    assert all(c["explanation"] for c in doc["conflicts"])
    assert os.readlink(tmp_path / "r/usr/libexec/git-core/git") == "/usr/libexec/git-core/git"


def test_cli_chronological_report_has_no_conflicts_key(tmp_path: Path) -> None:
    """The default order is chronological and its report carries no `conflicts` key."""
    report = tmp_path / "report.json"
    layers = [str(K282 / "1-alpine-git.tar"), str(K282 / "2-git-symlink.tar")]
    assert main(["apply", str(tmp_path / "c"), *layers, "--report", str(report), "-q"]) == 0
    doc = json.loads(report.read_text())
    assert "conflicts" not in doc and "order" not in doc
    assert (tmp_path / "c/usr/libexec/git-core/git").read_bytes().startswith(b"#!/bin/sh")


def test_cli_unpack_order_reverse(tmp_path: Path) -> None:
    """`unpack --order reverse` of the kaniko-282 OCI layout leaves the self-pointing symlink."""
    report = tmp_path / "report.json"
    dest = tmp_path / "u"
    args = ["unpack", str(K282 / "oci"), str(dest), "--order", "reverse", "--report", str(report)]
    assert main([*args, "-q"]) == 0
    assert os.readlink(dest / "usr/libexec/git-core/git") == "/usr/libexec/git-core/git"
    assert {c["kind"] for c in json.loads(report.read_text())["conflicts"]} == {"symlink-loop"}


def test_cli_order_rejects_other_values(tmp_path: Path) -> None:
    """An unknown --order is a usage error (exit 2)."""
    proc = _run("apply", str(tmp_path / "r"), str(K282 / "2-git-symlink.tar"), "--order", "up")
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_cli_reverse_error_is_one_line_with_its_exit_status(tmp_path: Path) -> None:
    """An unsafe entry newest first: one error line naming layer and entry, exit 5."""
    bad = Layer().file("a/.wh..", b"").write(tmp_path / "bad.tar")
    good = Layer().file("a", b"a").write(tmp_path / "good.tar")
    proc = _run("apply", str(tmp_path / "r"), str(good), str(bad), "--order", "reverse")
    assert proc.returncode == 5
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("extractor: error: layer 2/2") and "a/.wh.." in line
