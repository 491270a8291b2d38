"""The conflict detector, checked against real trees made by both orders.

For generated stacks, the layers are applied oldest first (``apply_layers``) and newest first
(``apply_layers_reverse``) into two temporary directories and the trees are compared: type,
symlink target, content and which names share an inode. The detector, which reads headers
only, must report exactly the paths that differ, and its in-memory simulations must predict
both real trees. Named cases pin the kinds and explanations; CLI cases pin exit statuses,
``--json`` and the reverse report's ``conflicts``.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from builders import Layer
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st

from extractor import ExtractorError, apply_layers, logs
from extractor.cli import main
from extractor.conflicts import (
    SCHEMA,
    _SimulationError,
    chronological,
    detect,
    read_stack,
    reverse,
)
from extractor.model import Kind
from extractor.reverse import apply_layers_reverse
from extractor.treemodel import Dir, Leaf, MemRoot

TOP = Path(__file__).resolve().parent.parent
K282 = TOP / "testdata" / "kaniko282"


@pytest.fixture(autouse=True)
def _logging_to_this_tests_stderr() -> Iterator[None]:
    """In-process CLI runs reconfigure structlog; start each test fresh and leave no trace."""
    logs.configure(0, "console", sys.stderr)
    yield
    structlog.reset_defaults()


# --------------------------------------------------------------------------------------------
# Generated stacks


@dataclass(frozen=True)
class Op:
    """One tar entry of a generated layer."""

    kind: str  # file, dir, symlink, hardlink, whiteout, opaque
    path: str  # for an opaque marker: its directory
    target: str = ""

    @property
    def member(self) -> str:
        """The normalised entry path this op is stored under."""
        head, _, base = self.path.rpartition("/")
        if self.kind == "whiteout":
            return f"{head}/.wh.{base}" if head else f".wh.{base}"
        if self.kind == "opaque":
            return f"{self.path}/.wh..wh..opq" if self.path else ".wh..wh..opq"
        return self.path

    def __str__(self) -> str:
        arrow = {"symlink": " -> ", "hardlink": " => "}.get(self.kind, "")
        return f"{self.kind:8} {self.path}{arrow}{self.target}"


NAMES = "abc"
KINDS = ("file", "file", "dir", "dir", "symlink", "hardlink", "hardlink", "whiteout", "opaque")
paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
dir_paths = st.lists(st.sampled_from(NAMES), min_size=0, max_size=3).map("/".join)


@st.composite
def ops(draw: st.DrawFn, earlier: list[str]) -> Op:
    """One entry; hardlinks mostly point at names that held a file or symlink before."""
    kind = draw(st.sampled_from(KINDS))
    if kind == "opaque":
        return Op("opaque", draw(dir_paths))
    path = draw(paths)
    if kind == "symlink":
        other = draw(paths)
        style = draw(st.sampled_from(("relative", "absolute", "dangling", "self")))
        if style == "relative":
            target = posixpath.relpath(other, posixpath.dirname(path) or ".")
        elif style == "absolute":
            target = "/" + other
        elif style == "self":
            target = "/" + path
        else:
            target = draw(st.sampled_from(("nowhere", "../../../gone", "/x/y")))
        earlier.append(path)
        return Op("symlink", path, target)
    if kind == "hardlink":
        roll = draw(st.integers(0, 5))
        target = draw(st.sampled_from(earlier)) if earlier and roll else draw(paths)
        earlier.append(path)
        return Op("hardlink", path, target)
    if kind == "file":
        earlier.append(path)
    return Op(kind, path)


@st.composite
def stacks(draw: st.DrawFn) -> list[list[Op]]:
    """2 to 4 layers of 1 to 10 entries each; mostly without the entries oldest first refuses."""
    earlier: list[str] = []
    count = draw(st.integers(2, 4))
    stack = [draw(st.lists(ops(earlier), min_size=1, max_size=10)) for _ in range(count)]
    return applicable(stack) if draw(st.integers(0, 3)) < 3 else stack


def applicable(stack: list[list[Op]]) -> list[list[Op]]:
    """The stack without the entries a chronological apply refuses (missing link targets...).

    The detector's own simulation finds them; if it is wrong, the real apply fails and the
    property test says so.
    """
    stack = [list(layer) for layer in stack]
    for _ in range(sum(map(len, stack))):
        entries, names = read_stack([io.BytesIO(b) for b in build(stack)])
        try:
            chronological(entries, names, True, False)
        except _SimulationError as e:
            stack[e.layer] = [op for op in stack[e.layer] if op.member != e.path]
            continue
        break
    return stack


def content(layer: int, index: int) -> bytes:
    """Every file entry has its own bytes, so content identity is visible in the tree."""
    return f"L{layer}E{index}".encode()


def build(stack: list[list[Op]]) -> list[bytes]:
    """The layer tarballs."""
    out = []
    for i, layer in enumerate(stack):
        tar = Layer()
        for j, op in enumerate(layer):
            if op.kind == "file":
                tar.file(op.path, content(i, j))
            elif op.kind == "dir":
                tar.dir(op.path)
            elif op.kind == "symlink":
                tar.symlink(op.path, op.target)
            elif op.kind == "hardlink":
                tar.hardlink(op.path, op.target)
            elif op.kind == "whiteout":
                tar.whiteout(op.path)
            else:
                tar.opaque(op.path)
        out.append(tar.tar())
    return out


def describe(stack: list[list[Op]]) -> str:
    """The stack, one entry a line."""
    lines = []
    for i, layer in enumerate(stack):
        lines.append(f"layer {i + 1}:")
        lines.extend(f"    {op}" for op in layer)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Trees: real ones from the disk, predicted ones from the detector's simulations

Tree = dict[str, tuple[object, ...]]


def observed(root: str) -> tuple[Tree, dict[str, frozenset[str]]]:
    """Each path's (type, target or content), and the names sharing each inode."""
    tree: Tree = {}
    inodes: dict[tuple[int, int], set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st_ = os.lstat(full)
            if stat.S_ISDIR(st_.st_mode):
                tree[rel] = ("dir",)
                continue
            if stat.S_ISLNK(st_.st_mode):
                tree[rel] = ("symlink", os.readlink(full))
            elif stat.S_ISREG(st_.st_mode):
                tree[rel] = ("file", Path(full).read_bytes())
            else:
                tree[rel] = ("other", stat.S_IFMT(st_.st_mode))
            inodes.setdefault((st_.st_dev, st_.st_ino), set()).add(rel)
    return tree, {p: frozenset(g) for g in inodes.values() for p in g}


def predicted(mem: MemRoot, stack: list[list[Op]]) -> tuple[Tree, dict[str, frozenset[str]]]:
    """``observed`` for a simulated tree: a file's content follows from its origin entry."""
    tree: Tree = {}
    leaves: dict[int, set[str]] = {}
    for path, node in mem.items():
        if isinstance(node, Dir):
            tree[path] = ("dir",)
            continue
        assert isinstance(node, Leaf)
        if node.kind is Kind.SYMLINK:
            tree[path] = ("symlink", node.target)
        elif node.kind is Kind.FILE:
            assert stack[node.origin.layer][node.origin.entry].kind == "file"
            tree[path] = ("file", content(node.origin.layer, node.origin.entry))
        else:
            tree[path] = ("other", node.kind.value)
        leaves.setdefault(id(node), set()).add(path)
    return tree, {p: frozenset(g) for g in leaves.values() for p in g}


def differing(
    a: tuple[Tree, dict[str, frozenset[str]]], b: tuple[Tree, dict[str, frozenset[str]]]
) -> set[str]:
    """Paths whose type, target, content or inode sharing differ between two trees."""
    (ta, ga), (tb, gb) = a, b
    return {
        p
        for p in set(ta) | set(tb)
        if ta.get(p) != tb.get(p) or ga.get(p, frozenset()) != gb.get(p, frozenset())
    }


def _apply(fn: object, dest: str, blobs: list[bytes]) -> ExtractorError | None:
    try:
        fn(dest, [io.BytesIO(b) for b in blobs])  # type: ignore[operator]
    except ExtractorError as e:
        return e
    return None


def _file(path: str) -> Op:
    return Op("file", path)


def _link(path: str, target: str) -> Op:
    return Op("hardlink", path, target)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(stack=stacks())
# two inodes written by one layer under one name (content identity is the entry, not the name);
@example(stack=[[_file("a")], [_link("b", "a"), _file("a"), _link("b", "b"), _file("a")]])
# kaniko #282;
@example(
    stack=[
        [_file("a/b"), _link("c/c", "a/b")],
        [Op("symlink", "a/b", "/c/c")],
    ]
)
# a hardlink whose target a newer layer whites out, and one hid by an opaque marker;
@example(stack=[[_file("a/b"), _link("c", "a/b"), _link("b", "a/b")], [Op("whiteout", "a/b")]])
@example(stack=[[_file("a/b"), _link("c", "a/b")], [Op("opaque", "a"), _file("a/c")]])
# an older symlink that a newer layer wrote through;
@example(stack=[[Op("symlink", "a", "b"), Op("dir", "b")], [_file("a/c")]])
# an older file where a newer layer only implied a directory.
@example(stack=[[_file("a")], [_file("a/b")]])
def test_detector_reports_exactly_the_paths_where_real_trees_differ(
    stack: list[list[Op]],
) -> None:
    """Every path where the two real trees differ is reported, and nothing else."""
    note(describe(stack))
    blobs = build(stack)
    with tempfile.TemporaryDirectory(prefix="extractor-conflicts-", dir="/dev/shm") as base:
        chrono_dir, rev_dir = os.path.join(base, "chrono"), os.path.join(base, "reverse")
        chrono_error = _apply(apply_layers, chrono_dir, blobs)
        rev_error = _apply(apply_layers_reverse, rev_dir, blobs)
        if chrono_error is not None:
            note(f"chronological apply fails: {chrono_error}")
            event("chronological apply fails")
            with pytest.raises(type(chrono_error)):
                detect([io.BytesIO(b) for b in blobs])
            return
        conflicts = detect([io.BytesIO(b) for b in blobs])
        note("\n".join(f"{c.path}: {c.kind}: {c.explanation}" for c in conflicts))
        if rev_error is not None:
            note(f"reverse apply fails: {rev_error}")
            event("reverse apply fails")
            assert [c.kind for c in conflicts] == ["reverse-order-fails"]
            return
        real_chrono, real_rev = observed(chrono_dir), observed(rev_dir)
        # The simulations predict both real trees.
        stack_entries, names = read_stack([io.BytesIO(b) for b in blobs])
        mem_chrono = chronological(stack_entries, names, True, False)
        mem_rev, _ = reverse(stack_entries, names, True, False)
        assert not differing(predicted(mem_chrono, stack), real_chrono), "chronological model"
        assert not differing(predicted(mem_rev, stack), real_rev), "reverse model"
        # And the detector reports exactly where the real trees differ.
        assert {c.path for c in conflicts} == differing(real_chrono, real_rev)
        assert len({c.path for c in conflicts}) == len(conflicts)
        event(f"conflicts: {bool(conflicts)}")
        for kind in {c.kind for c in conflicts}:
            event(f"kind {kind}")
        for c in conflicts:
            assert c.kind and c.layers and c.explanation.endswith(".")
            assert all(1 <= n <= len(stack) for n in c.layers)


# --------------------------------------------------------------------------------------------
# Named cases, each checked against the real trees too


def _real_differences(tmp_path: Path, layers: list[Layer]) -> set[str]:
    blobs = [layer.tar() for layer in layers]
    chrono, rev = str(tmp_path / "chrono"), str(tmp_path / "reverse")
    apply_layers(chrono, [io.BytesIO(b) for b in blobs])
    apply_layers_reverse(rev, [io.BytesIO(b) for b in blobs])
    return differing(observed(chrono), observed(rev))


GIT = b"#!/bin/sh\necho 'git version 2.18.0'\n"
KANIKO = [
    Layer()
    .dir("usr/bin")
    .file("usr/bin/git", GIT, mode=0o755)
    .dir("usr/libexec/git-core")
    .hardlink("usr/libexec/git-core/git", "usr/bin/git"),
    Layer().dir("usr").dir("usr/bin").symlink("usr/bin/git", "/usr/libexec/git-core/git"),
]

NAMED: list[tuple[str, list[Layer], dict[str, tuple[str, tuple[int, ...]]], str]] = [
    (
        "kaniko 282",
        KANIKO,
        {
            "usr/libexec/git-core/git": ("symlink-loop", (1, 2)),
            "usr/bin/git": ("symlink-loop", (1, 2)),
        },
        "replaced by a symlink to /usr/libexec/git-core/git",
    ),
    (
        "hardlink target replaced by a symlink that does not loop",
        [Layer().file("t", b"T").hardlink("l", "t"), Layer().symlink("t", "elsewhere")],
        {
            "l": ("hardlink-target-replaced-by-symlink", (1, 2)),
            "t": ("hardlink-target-replaced-by-symlink", (1, 2)),
        },
        "which layer 2 replaced by a symlink to elsewhere",
    ),
    (
        "hardlink target whited out",
        [Layer().file("t", b"T").hardlink("l", "t"), Layer().whiteout("t")],
        {"l": ("hardlink-target-whited-out", (1, 2))},
        "which layer 2 removed with a whiteout",
    ),
    (
        "hardlink target hidden by an opaque marker",
        [Layer().dir("d").file("d/t", b"T").hardlink("l", "d/t"), Layer().dir("d").opaque("d")],
        {"l": ("hardlink-target-hidden-by-opaque", (1, 2))},
        "which layer 2 hid with an opaque marker",
    ),
    (
        "hardlink target replaced by a directory",
        [Layer().file("t", b"T").hardlink("l", "t"), Layer().dir("t")],
        {"l": ("hardlink-target-replaced-by-directory", (1, 2))},
        "which layer 2 replaced by a directory",
    ),
    (
        "hardlink target replaced by a file",
        [Layer().file("t", b"old").hardlink("l", "t"), Layer().file("t", b"new")],
        {
            "l": ("hardlink-target-replaced-by-file", (1, 2)),
            "t": ("hardlink-target-replaced-by-file", (1, 2)),
        },
        "which layer 2 replaced by another file",
    ),
    (
        "hardlink to an older layer's file",
        [Layer().file("etc/passwd", b"root"), Layer().hardlink("app/passwd.orig", "etc/passwd")],
        {
            "app": ("hardlink-target-from-older-layer", (1, 2)),
            "app/passwd.orig": ("hardlink-target-from-older-layer", (1, 2)),
            "etc/passwd": ("hardlink-target-from-older-layer", (1, 2)),
        },
        "which only layer 1 provides",
    ),
    (
        "opaque marker without its directory entry",
        [Layer().file("d", b"a file"), Layer().opaque("d")],
        {"d": ("opaque-marker-not-applied", (1, 2))},
        "creates nothing",
    ),
    (
        "older file where newer layers only implied a directory",
        [Layer().file("a", b"file"), Layer().file("a/b", b"below")],
        {
            "a": ("implicit-directory-replaced", (1, 2)),
            "a/b": ("implicit-directory-replaced", (1, 2)),
        },
        "none named a",
    ),
    (
        "an older entry written through its own symlink, hidden by name",
        [Layer().symlink("s", "real").file("s/f", b"f"), Layer().file("s", b"s")],
        {
            "real": ("hidden-by-newer-name", (1, 2)),
            "real/f": ("hidden-by-newer-name", (1, 2)),
        },
        "layer 2 has a file at s, which hides every older entry below s by name",
    ),
]


@pytest.mark.parametrize(("name", "layers", "want", "phrase"), NAMED, ids=[n[0] for n in NAMED])
def test_named_stacks(
    tmp_path: Path,
    name: str,
    layers: list[Layer],
    want: dict[str, tuple[str, tuple[int, ...]]],
    phrase: str,
) -> None:
    """Each named stack gives the listed conflicts, exactly where the real trees differ."""
    conflicts = detect([io.BytesIO(layer.tar()) for layer in layers])
    assert {c.path: (c.kind, c.layers) for c in conflicts} == want
    assert {c.path for c in conflicts} == _real_differences(tmp_path, layers)
    for c in conflicts:
        assert phrase in c.explanation
        assert c.explanation.count(".") >= 1 and c.explanation[0].isupper()


def test_kaniko_282_real_trees(tmp_path: Path) -> None:
    """Oldest first git runs (a symlink to the script); newest first it is a symlink to itself."""
    _real_differences(tmp_path, KANIKO)
    chrono = tmp_path / "chrono"
    assert os.readlink(chrono / "usr/bin/git") == "/usr/libexec/git-core/git"
    script = chrono / "usr/libexec/git-core/git"
    assert stat.S_ISREG(os.lstat(script).st_mode) and script.read_bytes() == GIT
    run = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True)
    assert run.stdout == "git version 2.18.0\n"
    rev = tmp_path / "reverse"
    assert os.readlink(rev / "usr/libexec/git-core/git") == "/usr/libexec/git-core/git"
    assert os.readlink(rev / "usr/bin/git") == "/usr/libexec/git-core/git"
    assert not any(p.is_file() and not p.is_symlink() for p in rev.rglob("*"))


def test_plain_stack_has_no_conflicts(tmp_path: Path) -> None:
    """A stack with overrides, whiteouts, opaque dirs and same-layer links has no conflicts."""
    layers = [
        Layer()
        .dir("etc")
        .file("etc/a", b"1")
        .file("etc/b", b"1")
        .dir("var/cache")
        .file("var/cache/x", b"x"),
        Layer().file("etc/a", b"2").whiteout("etc/b").dir("var/cache").opaque("var/cache"),
        Layer().file("bin/tool", b"t").hardlink("bin/alias", "bin/tool").symlink("t", "bin/tool"),
    ]
    assert detect([io.BytesIO(layer.tar()) for layer in layers]) == []
    assert _real_differences(tmp_path, layers) == set()


def test_detector_refuses_what_oldest_first_refuses() -> None:
    """A stack the chronological order refuses raises that error (here: a missing link target)."""
    layers = [Layer().file("a", b"a"), Layer().hardlink("l", "nowhere")]
    with pytest.raises(ExtractorError, match="hardlink target does not exist: nowhere") as info:
        detect([io.BytesIO(layer.tar()) for layer in layers])
    assert info.value.exit_code == 3
    assert info.value.layer is not None and info.value.layer.startswith("2/2")


def test_stack_only_reverse_order_refuses(tmp_path: Path) -> None:
    """Newest first refusing what oldest first applies is a conflict, not an error."""
    # Newest first, l becomes a copy of the symlink t -> /l, and l/x then loops.
    layers = [
        Layer().file("t", b"T").hardlink("l", "t").file("l/x", b"x"),
        Layer().symlink("t", "/l"),
    ]
    blobs = [layer.tar() for layer in layers]
    apply_layers(tmp_path / "c", [io.BytesIO(b) for b in blobs])
    with pytest.raises(ExtractorError, match="too many levels of symbolic links"):
        apply_layers_reverse(tmp_path / "r", [io.BytesIO(b) for b in blobs])
    (conflict,) = detect([io.BytesIO(b) for b in blobs])
    assert (conflict.path, conflict.kind, conflict.layers) == ("l/x", "reverse-order-fails", (1,))
    assert "too many levels of symbolic links" in conflict.explanation


def test_reverse_apply_report_matches_the_detector(tmp_path: Path) -> None:
    """A reverse apply's conflicts are the detector's for the same layers."""
    layers = [*KANIKO, Layer().file("t", b"T").hardlink("l", "t"), Layer().whiteout("t")]
    blobs = [layer.tar() for layer in layers]
    result = apply_layers_reverse(tmp_path / "r", [io.BytesIO(b) for b in blobs])
    assert result.conflicts == detect([io.BytesIO(b) for b in blobs])
    assert result.conflicts


def test_reverse_apply_lists_a_stack_oldest_first_refuses(tmp_path: Path) -> None:
    """When only oldest first refuses the stack, the reverse apply says so as a conflict."""
    layers = [Layer().file("t", b"T"), Layer().dir("t").hardlink("l", "t")]
    blobs = [layer.tar() for layer in layers]
    with pytest.raises(ExtractorError, match="hardlink to a directory"):
        apply_layers(tmp_path / "c", [io.BytesIO(b) for b in blobs])
    result = apply_layers_reverse(tmp_path / "r", [io.BytesIO(b) for b in blobs])
    assert [(c.path, c.kind, c.layers) for c in result.conflicts or []] == [
        ("l", "chronological-order-fails", (2,))
    ]
    assert [n.event for n in result.warnings] == ["hardlink_target_not_a_file"]


# --------------------------------------------------------------------------------------------
# testdata/kaniko282 and the command line


def test_kaniko282_testdata_is_reproducible() -> None:
    """testdata/make_kaniko282.py --check finds the committed files byte-identical."""
    proc = subprocess.run(
        [sys.executable, "testdata/make_kaniko282.py", "--check"],
        cwd=TOP,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


K282_LAYERS = [str(K282 / "1-alpine-git.tar"), str(K282 / "2-git-symlink.tar")]


def test_cli_conflicts_layers_explains_kaniko_282(capsys: pytest.CaptureFixture[str]) -> None:
    """`conflicts --layers` prints each conflict with kind, layers and sentence; exit 1."""
    assert main(["conflicts", "--layers", *K282_LAYERS]) == 1
    out, err = capsys.readouterr()
    assert "usr/libexec/git-core/git: symlink-loop (layers 1, 2)" in out
    assert "Layer 1 hardlinks usr/libexec/git-core/git to usr/bin/git" in out
    assert "2 paths differ when the 2 layers are applied newest first" in err


def test_cli_conflicts_json_for_the_oci_image(capsys: pytest.CaptureFixture[str]) -> None:
    """`conflicts IMAGE --json` reads the OCI layout and prints the v1 document; exit 1."""
    assert main(["conflicts", str(K282 / "oci"), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == SCHEMA == "extractor.conflicts/v1"
    assert [set(c) for c in doc["conflicts"]] == [{"path", "kind", "layers", "explanation"}] * 2
    assert {c["path"]: c["layers"] for c in doc["conflicts"]} == {
        "usr/bin/git": [1, 2],
        "usr/libexec/git-core/git": [1, 2],
    }
    assert main(["conflicts", str(K282 / "oci"), "--ref", "kaniko282:latest", "-q"]) == 1


def test_cli_conflicts_none_is_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No conflicts: exit 0, nothing on stdout, an empty list with --json."""
    paths = [
        str(Layer().file("a", b"1").write(tmp_path / "1.tar")),
        str(Layer().file("a", b"2").write(tmp_path / "2.tar.gz", "gzip")),
    ]
    assert main(["conflicts", "--layers", *paths]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "no conflicts" in err
    assert main(["conflicts", "--layers", *paths, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"schema": SCHEMA, "conflicts": []}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "extractor", "conflicts", *args],
        capture_output=True,
        text=True,
        cwd=TOP,
    )


def test_cli_conflicts_exit_statuses(tmp_path: Path) -> None:
    """Usage 2, bad input 3, not found 4, unsafe 5: one error line each, no traceback."""
    not_tar = tmp_path / "junk.tar"
    not_tar.write_bytes(b"this is not a tar archive" * 40)
    unsafe = Layer().file("a/.wh..", b"").write(tmp_path / "unsafe.tar")
    cases = [
        ((), 2),
        ((str(K282 / "oci"), "--layers", K282_LAYERS[0]), 2),
        (("--layers", K282_LAYERS[0], "--ref", "x"), 2),
        (("--layers", str(not_tar)), 3),
        (("--layers", str(tmp_path / "missing.tar")), 4),
        ((str(tmp_path / "no-such-image"),), 4),
        (("--layers", K282_LAYERS[0], str(unsafe)), 5),
    ]
    for args, code in cases:
        proc = _cli(*args)
        assert proc.returncode == code, (args, proc.stderr)
        assert proc.stdout == ""
        (line,) = proc.stderr.strip().splitlines()[-1:]
        assert line.startswith("extractor: error:") or code == 2, proc.stderr
        assert "Traceback" not in proc.stderr


def test_cli_conflicts_reads_a_layer_from_stdin() -> None:
    """'-' reads one layer from standard input."""
    proc = subprocess.run(
        [sys.executable, "-m", "extractor", "conflicts", "--layers", "-", K282_LAYERS[1]],
        input=(K282 / "1-alpine-git.tar").read_bytes(),
        capture_output=True,
        cwd=TOP,
    )
    assert proc.returncode == 1
    assert b"symlink-loop" in proc.stdout
