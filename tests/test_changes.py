"""The changeset rules: how a layer changes what the lower layers left.

Every test applies real layers with ``apply_layers`` onto ``canary.dest`` (so a
write that escapes the root fails the test as well) and compares the whole
resulting tree with ``tree()``: type, permission bits, content or link target.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from builders import MTIME, Layer

from extractor import ApplyOptions, ApplyResult, UnsafeEntryError, apply_layers
from extractor.errors import EXIT_UNSAFE

NS = 1_000_000_000
UP_MTIME = MTIME + 1000  # the upper layers' times, distinct from the lower ones

Node = tuple[str, int, object]
Tree = dict[str, Node]


# -- helpers -----------------------------------------------------------------


def _f(data: bytes, mode: int = 0o644) -> Node:
    return ("file", mode, data)


def _d(mode: int = 0o755) -> Node:
    return ("dir", mode, None)


def _l(target: str) -> Node:
    return ("symlink", 0o777, target)


def _p(mode: int = 0o644) -> Node:
    return ("fifo", mode, None)


def _node(path: str) -> Node:
    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            return ("file", mode, f.read())
    if stat.S_ISDIR(st.st_mode):
        return ("dir", mode, None)
    if stat.S_ISLNK(st.st_mode):
        return ("symlink", mode, os.readlink(path))
    if stat.S_ISFIFO(st.st_mode):
        return ("fifo", mode, None)
    return ("other", mode, st.st_mode)


def _walk(top: Path) -> Iterator[tuple[str, str]]:
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            yield os.path.relpath(path, top), path


def tree(top: Path) -> Tree:
    """{relpath: (type, permission bits, content or link target)} of everything below top."""
    return {rel: _node(path) for rel, path in _walk(top)}


def _state(top: Path) -> dict[str, object]:
    """tree() plus inode, link count and mtime of every entry and the root's own mode."""
    out: dict[str, object] = {}
    for rel, path in _walk(top):
        st = os.lstat(path)
        out[rel] = (_node(path), st.st_ino, st.st_nlink, st.st_mtime_ns)
    st = os.lstat(top)
    out["."] = (st.st_mode, st.st_ino, st.st_mtime_ns)
    return out


def _apply(dest: Path, *layers: Layer, **options: Any) -> ApplyResult:
    """Apply ``layers`` (as in-memory tar streams), oldest first, onto ``dest``."""
    streams = [io.BytesIO(layer.tar()) for layer in layers]
    return apply_layers(dest, streams, ApplyOptions(**options))


def _mtime(path: Path) -> int:
    return os.lstat(path).st_mtime_ns


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """Run with umask 077, so modes that are right only by the umask's grace show up."""
    old = os.umask(0o077)
    yield
    os.umask(old)


# -- 1. whiteouts ------------------------------------------------------------


def _base() -> Layer:
    return (
        Layer()
        .dir("etc")
        .file("etc/a", b"a")
        .file("etc/b", b"b")
        .dir("d")
        .file("d/x", b"x")
        .dir("d/sub")
        .file("d/sub/y", b"y")
        .file("t", b"target")
        .symlink("lt", "t")
        .dir("rd")
        .file("rd/f", b"rdf")
        .symlink("ld", "rd")
        .symlink("ald", "/rd")
    )


BASE_TREE: Tree = {
    "etc": _d(),
    "etc/a": _f(b"a"),
    "etc/b": _f(b"b"),
    "d": _d(),
    "d/x": _f(b"x"),
    "d/sub": _d(),
    "d/sub/y": _f(b"y"),
    "t": _f(b"target"),
    "lt": _l("t"),
    "rd": _d(),
    "rd/f": _f(b"rdf"),
    "ld": _l("rd"),
    "ald": _l("/rd"),
}


def _without(base: Tree, *gone: str) -> Tree:
    return {k: v for k, v in base.items() if k not in gone}


WHITEOUT_CASES = [
    pytest.param(Layer().whiteout("etc/a"), _without(BASE_TREE, "etc/a"), id="file"),
    pytest.param(Layer().whiteout("t"), _without(BASE_TREE, "t"), id="symlinked-file-link-dangles"),
    pytest.param(
        Layer().whiteout("d"), _without(BASE_TREE, "d", "d/x", "d/sub", "d/sub/y"), id="dir-tree"
    ),
    pytest.param(Layer().whiteout("d/sub"), _without(BASE_TREE, "d/sub", "d/sub/y"), id="nested"),
    pytest.param(Layer().whiteout("lt"), _without(BASE_TREE, "lt"), id="symlink-to-file"),
    pytest.param(Layer().whiteout("ld"), _without(BASE_TREE, "ld"), id="symlink-to-dir"),
    pytest.param(Layer().whiteout("ald"), _without(BASE_TREE, "ald"), id="abs-symlink-to-dir"),
    pytest.param(Layer().whiteout("nothere"), BASE_TREE, id="missing-name"),
    pytest.param(Layer().whiteout("etc/nothere"), BASE_TREE, id="missing-name-in-dir"),
    pytest.param(
        Layer().whiteout("etc/a").whiteout("etc/b"),
        _without(BASE_TREE, "etc/a", "etc/b"),
        id="all-children-dir-stays",
    ),
    # Same layer: the whiteout hides only what lower layers had.
    pytest.param(
        Layer().whiteout("etc/a").file("etc/a", b"new"),
        {**BASE_TREE, "etc/a": _f(b"new")},
        id="same-layer-whiteout-then-file",
    ),
    pytest.param(
        Layer().file("etc/a", b"new").whiteout("etc/a"),
        {**BASE_TREE, "etc/a": _f(b"new")},
        id="same-layer-file-then-whiteout",
    ),
    pytest.param(
        Layer().file("x", b"new").whiteout("x"),
        {**BASE_TREE, "x": _f(b"new")},
        id="same-layer-new-file-then-whiteout",
    ),
    pytest.param(
        Layer().whiteout("x").file("x", b"new"),
        {**BASE_TREE, "x": _f(b"new")},
        id="same-layer-whiteout-then-new-file",
    ),
    pytest.param(
        Layer().symlink("lt", "etc/a").whiteout("lt"),
        {**BASE_TREE, "lt": _l("etc/a")},
        id="same-layer-symlink-then-whiteout",
    ),
    pytest.param(
        Layer().file("d/new", b"n").whiteout("d"),
        {**_without(BASE_TREE, "d/x", "d/sub", "d/sub/y"), "d/new": _f(b"n")},
        id="same-layer-child-then-dir-whiteout",
    ),
    pytest.param(
        Layer().file("d/sub/new", b"n").whiteout("d"),
        {**_without(BASE_TREE, "d/x", "d/sub/y"), "d/sub/new": _f(b"n")},
        id="same-layer-grandchild-then-dir-whiteout",
    ),
    pytest.param(
        Layer().whiteout("d").dir("d", mode=0o750).file("d/new", b"n"),
        {**_without(BASE_TREE, "d/x", "d/sub", "d/sub/y"), "d": _d(0o750), "d/new": _f(b"n")},
        id="same-layer-dir-whiteout-then-dir",
    ),
]


@pytest.mark.parametrize(("upper", "expected"), WHITEOUT_CASES)
def test_whiteout(canary: Any, upper: Layer, expected: Tree) -> None:
    """A whiteout removes exactly what lower layers had at its name, and never appears itself."""
    _apply(canary.dest, _base(), upper)
    assert tree(canary.dest) == expected


def test_whiteout_of_symlink_to_dir_keeps_the_directory_contents(canary: Any) -> None:
    """Whiting out a symlink to a directory removes the link, never the directory's children."""
    _apply(canary.dest, _base(), Layer().whiteout("ld").whiteout("ald"))
    assert (canary.dest / "rd" / "f").read_bytes() == b"rdf"
    assert not os.path.lexists(canary.dest / "ld")
    assert not os.path.lexists(canary.dest / "ald")


def test_whiteout_in_missing_directory_is_a_noop(canary: Any) -> None:
    """A whiteout below a directory nothing created deletes nothing and writes no entry."""
    _apply(canary.dest, _base())
    before = _state(canary.dest)
    result = _apply(canary.dest, Layer().whiteout("nodir/x").whiteout("etc/nodir/y"))
    after = _state(canary.dest)
    # Creating the (empty) parent, as Docker and containerd do, is tolerated; nothing else.
    for extra in ("nodir", "etc/nodir"):
        if extra in after:
            node = after.pop(extra)
            assert isinstance(node, tuple)
            assert node[0] == _d()
    after.pop(".")
    after.pop("etc")
    assert after == {k: v for k, v in before.items() if k not in (".", "etc")}
    assert tree(canary.dest).keys() >= BASE_TREE.keys()
    assert result.layers[0].whiteouts == 2


CROSS_LAYER_CASES = [
    pytest.param(
        [Layer().whiteout("d"), Layer().dir("d", mode=0o700).file("d/z", b"z")],
        {**_without(BASE_TREE, "d/x", "d/sub", "d/sub/y"), "d": _d(0o700), "d/z": _f(b"z")},
        id="dir-whiteout-then-recreate-no-resurrection",
    ),
    pytest.param(
        [Layer().whiteout("etc/a"), Layer().file("etc/a", b"again", mode=0o600)],
        {**BASE_TREE, "etc/a": _f(b"again", 0o600)},
        id="file-whiteout-then-recreate",
    ),
    pytest.param(
        [Layer().whiteout("t"), Layer().dir("t").file("t/in", b"i")],
        {**BASE_TREE, "t": _d(), "t/in": _f(b"i")},
        id="file-whiteout-then-dir",
    ),
    pytest.param(
        [Layer().file("n", b"mid"), Layer().whiteout("n")],
        BASE_TREE,
        id="whiteout-of-middle-layer-file",
    ),
    pytest.param(
        [Layer().whiteout("ld"), Layer().symlink("ld", "etc")],
        {**BASE_TREE, "ld": _l("etc")},
        id="symlink-whiteout-then-new-link",
    ),
]


@pytest.mark.parametrize(("uppers", "expected"), CROSS_LAYER_CASES)
def test_whiteout_across_layers(canary: Any, uppers: list[Layer], expected: Tree) -> None:
    """A name whited out in one layer can be recreated by a later one, without old content."""
    _apply(canary.dest, _base(), *uppers)
    assert tree(canary.dest) == expected


@pytest.mark.parametrize(
    "between",
    [
        pytest.param(Layer().whiteout("m"), id="whited-out"),
        pytest.param(Layer().file("m", b"f"), id="replaced-by-file"),
        pytest.param(Layer().fifo("m"), id="replaced-by-fifo"),
    ],
)
def test_recreated_directory_forgets_the_old_attributes(canary: Any, between: Layer) -> None:
    """A directory removed by a later layer and recreated implicitly is 0755, not its old mode."""
    old = Layer().dir("m", mode=0o700, mtime=UP_MTIME).file("m/old", b"o")
    _apply(canary.dest, _base(), old, between, Layer().file("m/z", b"z"))
    assert tree(canary.dest) == {**BASE_TREE, "m": _d(), "m/z": _f(b"z")}
    assert _mtime(canary.dest / "m") != UP_MTIME * NS


def test_whiteout_and_opaque_keep_directory_times(canary: Any) -> None:
    """Removing children by whiteout or opaque marker leaves the directories' listed mtimes."""
    _apply(canary.dest, _base(), Layer().whiteout("etc/a").opaque("d").whiteout("rd/f"))
    for rel in ("etc", "d", "rd"):
        assert _mtime(canary.dest / rel) == MTIME * NS, rel
    assert tree(canary.dest)["d"] == _d()


def test_whiteout_of_one_hardlinked_name_keeps_the_other(canary: Any) -> None:
    """Whiting out one name of a hardlinked file leaves the other name with the content."""
    _apply(canary.dest, Layer().file("a", b"shared").hardlink("b", "a"), Layer().whiteout("a"))
    assert tree(canary.dest) == {"b": _f(b"shared")}
    assert os.lstat(canary.dest / "b").st_nlink == 1


def test_children_after_dir_replaced_by_symlink_in_same_layer(canary: Any) -> None:
    """After a layer turns its directory into a symlink, later children resolve through the link."""
    upper = (
        Layer()
        .dir("a")
        .file("a/c", b"c")
        .dir("b")
        .symlink("a", "/b")  # a duplicate: last wins, and the cached parent `a` is stale
        .file("a/d", b"d")
    )
    _apply(canary.dest, upper)
    assert tree(canary.dest) == {"a": _l("/b"), "b": _d(), "b/d": _f(b"d")}


# -- 2. malformed whiteouts --------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [".wh.", ".wh..", ".wh...", "etc/.wh.", "etc/.wh..", "etc/.wh...", "d/sub/.wh.."],
)
def test_malformed_whiteout_is_refused_and_deletes_nothing(canary: Any, name: str) -> None:
    """`.wh.`, `.wh..` and `.wh...` are refused (exit 5), naming the entry, and delete nothing."""
    _apply(canary.dest, _base())
    before = _state(canary.dest)
    with pytest.raises(UnsafeEntryError) as info:
        _apply(canary.dest, Layer().file(name))
    err = info.value
    assert err.exit_code == EXIT_UNSAFE == 5
    assert err.entry == name
    assert name in str(err)
    assert _state(canary.dest) == before


def test_malformed_whiteout_in_a_later_layer_of_one_stack(canary: Any) -> None:
    """In one stack, a malformed whiteout in layer 2 leaves layer 1's tree whole."""
    with pytest.raises(UnsafeEntryError) as info:
        _apply(canary.dest, _base(), Layer().file("etc/.wh.."))
    assert info.value.layer is not None and info.value.layer.startswith("2/2")
    assert tree(canary.dest) == BASE_TREE


# -- 3. opaque directories ---------------------------------------------------


def _obase() -> Layer:
    return (
        Layer()
        .dir("d")
        .file("d/a", b"a")
        .dir("d/sub")
        .file("d/sub/b", b"b")
        .dir("d/sub/deep")
        .file("d/sub/deep/c", b"c")
        .symlink("d/l", "../e/f")
        .fifo("d/p")
        .dir("e")
        .file("e/f", b"f")
        .file("g", b"g")
        .dir("dd")
        .file("dd/x", b"x")
    )


OBASE_TREE: Tree = {
    "d": _d(),
    "d/a": _f(b"a"),
    "d/sub": _d(),
    "d/sub/b": _f(b"b"),
    "d/sub/deep": _d(),
    "d/sub/deep/c": _f(b"c"),
    "d/l": _l("../e/f"),
    "d/p": _p(),
    "e": _d(),
    "e/f": _f(b"f"),
    "g": _f(b"g"),
    "dd": _d(),
    "dd/x": _f(b"x"),
}
D_CHILDREN = ("d/a", "d/sub", "d/sub/b", "d/sub/deep", "d/sub/deep/c", "d/l", "d/p")
OPAQUE_D = _without(OBASE_TREE, *D_CHILDREN)

OPAQUE_CASES = [
    pytest.param([Layer().opaque("d")], OPAQUE_D, id="hides-all-lower-children"),
    pytest.param(
        [Layer().opaque("d/sub")],
        _without(OBASE_TREE, "d/sub/b", "d/sub/deep", "d/sub/deep/c"),
        id="nested-dir-only",
    ),
    pytest.param(
        [Layer().dir("d", mode=0o700).opaque("d").file("d/new", b"n").file("d/sub/n", b"s")],
        {**OPAQUE_D, "d": _d(0o700), "d/new": _f(b"n"), "d/sub": _d(), "d/sub/n": _f(b"s")},
        id="marker-before-same-layer-children",
    ),
    pytest.param(
        [Layer().file("d/new", b"n").file("d/sub/n", b"s").file("d/a", b"A2").opaque("d")],
        {**OPAQUE_D, "d/new": _f(b"n"), "d/sub": _d(), "d/sub/n": _f(b"s"), "d/a": _f(b"A2")},
        id="marker-after-same-layer-children",
    ),
    pytest.param(
        [Layer().dir("d/sub", mode=0o750).symlink("d/l", "g").opaque("d")],
        {**OPAQUE_D, "d/sub": _d(0o750), "d/l": _l("g")},
        id="marker-after-same-layer-dir-hides-its-lower-children",
    ),
    pytest.param(
        [Layer().opaque("newd")], {**OBASE_TREE, "newd": _d()}, id="dir-lower-layers-lacked"
    ),
    pytest.param(
        [Layer().dir("newd", mode=0o700).opaque("newd").file("newd/x", b"x")],
        {**OBASE_TREE, "newd": _d(0o700), "newd/x": _f(b"x")},
        id="new-dir-with-children",
    ),
    pytest.param(
        [Layer().file("d/mid", b"m"), Layer().opaque("d")],
        OPAQUE_D,
        id="hides-every-lower-layer",
    ),
    pytest.param(
        [Layer().opaque("d"), Layer().file("d/later", b"l")],
        {**OPAQUE_D, "d/later": _f(b"l")},
        id="later-layer-adds-again",
    ),
    pytest.param(
        [Layer().file("n", b"n").opaque("")],
        {"n": _f(b"n")},
        id="root-marker-hides-everything-lower",
    ),
]


@pytest.mark.parametrize(("uppers", "expected"), OPAQUE_CASES)
def test_opaque(canary: Any, uppers: list[Layer], expected: Tree) -> None:
    """An opaque marker hides what lower layers had in DIR, keeps the same layer's, and vanishes."""
    _apply(canary.dest, _obase(), *uppers)
    assert tree(canary.dest) == expected


def test_opaque_keeps_the_directory_itself(canary: Any) -> None:
    """The opaque directory stays the same directory (its siblings untouched), only emptied."""
    _apply(canary.dest, _obase())
    d_ino = os.lstat(canary.dest / "d").st_ino
    dd_ino = os.lstat(canary.dest / "dd" / "x").st_ino
    result = _apply(canary.dest, Layer().opaque("d"))
    assert os.lstat(canary.dest / "d").st_ino == d_ino
    assert os.lstat(canary.dest / "dd" / "x").st_ino == dd_ino
    assert os.listdir(canary.dest / "d") == []
    assert result.layers[0].opaque_dirs == 1


# -- 4. AUFS bookkeeping -----------------------------------------------------


def test_aufs_bookkeeping_is_not_written(canary: Any) -> None:
    """`.wh..wh.aufs`, `.wh..wh.orph/` and `.wh..wh.plnk/` are skipped and counted."""
    upper = (
        Layer().file(".wh..wh.aufs", b"").dir(".wh..wh.orph").dir(".wh..wh.plnk").file("keep", b"k")
    )
    result = _apply(canary.dest, upper)
    assert tree(canary.dest) == {"keep": _f(b"k")}
    assert result.layers[0].skipped == 3


def test_aufs_orphan_file_is_not_written(canary: Any) -> None:
    """A file inside `.wh..wh.orph/` is AUFS bookkeeping too: skipped, not an error."""
    upper = Layer().dir(".wh..wh.orph").file(".wh..wh.orph/123", b"o").file("keep", b"k")
    _apply(canary.dest, upper)
    assert tree(canary.dest) == {"keep": _f(b"k")}


def test_aufs_plnk_hardlinks_get_their_content(canary: Any) -> None:
    """Hardlinks into `.wh..wh.plnk` get its file's content; the store itself is not kept."""
    upper = (
        Layer()
        .dir(".wh..wh.plnk")
        .file(".wh..wh.plnk/123.456", b"shared content", mode=0o755)
        .dir("usr")
        .dir("usr/bin")
        .hardlink("usr/bin/x", ".wh..wh.plnk/123.456")
        .hardlink("usr/bin/y", ".wh..wh.plnk/123.456")
    )
    _apply(canary.dest, upper)
    assert tree(canary.dest) == {
        "usr": _d(),
        "usr/bin": _d(),
        "usr/bin/x": _f(b"shared content", 0o755),
        "usr/bin/y": _f(b"shared content", 0o755),
    }
    x, y = os.lstat(canary.dest / "usr/bin/x"), os.lstat(canary.dest / "usr/bin/y")
    assert x.st_ino == y.st_ino
    assert x.st_nlink == 2  # the store's own name is gone


# -- 5. replacement matrix ---------------------------------------------------


def _mbase() -> Layer:
    return Layer().file("tf", b"target").dir("td").file("td/inner", b"inner").file("other", b"o")


MBASE_TREE: Tree = {
    "tf": _f(b"target"),
    "td": _d(),
    "td/inner": _f(b"inner"),
    "other": _f(b"o"),
}
P_CHILDREN: Tree = {"p/c1": _f(b"c1", 0o600), "p/sub": _d(0o700), "p/sub/c2": _f(b"c2")}

LOWER: dict[str, tuple[Callable[[Layer], Layer], Tree]] = {
    "file": (lambda la: la.file("p", b"lower", mode=0o600), {"p": _f(b"lower", 0o600)}),
    "dir": (
        lambda la: (
            la.dir("p", mode=0o711)
            .file("p/c1", b"c1", mode=0o600)
            .dir("p/sub", mode=0o700)
            .file("p/sub/c2", b"c2")
        ),
        {"p": _d(0o711), **P_CHILDREN},
    ),
    "symlink-to-file": (lambda la: la.symlink("p", "tf"), {"p": _l("tf")}),
    "symlink-to-dir": (lambda la: la.symlink("p", "td"), {"p": _l("td")}),
    "fifo": (lambda la: la.fifo("p", mode=0o600), {"p": _p(0o600)}),
}
UPPER: dict[str, tuple[Callable[[Layer], Layer], Tree]] = {
    "file": (
        lambda la: la.file("p", b"upper", mode=0o640, mtime=UP_MTIME),
        {"p": _f(b"upper", 0o640)},
    ),
    "dir": (lambda la: la.dir("p", mode=0o750, mtime=UP_MTIME), {"p": _d(0o750)}),
    "symlink": (lambda la: la.symlink("p", "td/inner", mtime=UP_MTIME), {"p": _l("td/inner")}),
    "hardlink": (lambda la: la.hardlink("p", "other"), {"p": _f(b"o")}),
    "fifo": (lambda la: la.fifo("p", mode=0o640, mtime=UP_MTIME), {"p": _p(0o640)}),
}


@pytest.mark.parametrize("upper", list(UPPER))
@pytest.mark.parametrize("lower", list(LOWER))
def test_replacement_matrix(canary: Any, lower: str, upper: str) -> None:
    """The upper entry replaces whatever the lower layer had at its path, exactly."""
    make_lower, _ = LOWER[lower]
    make_upper, upper_tree = UPPER[upper]
    _apply(canary.dest, make_lower(_mbase()), make_upper(Layer()))
    expected = {**MBASE_TREE, **upper_tree}
    if lower == "dir" and upper == "dir":
        expected.update(P_CHILDREN)  # dir over dir merges: children stay
    assert tree(canary.dest) == expected
    p = canary.dest / "p"
    if upper == "hardlink":
        assert os.path.samefile(p, canary.dest / "other")
        assert os.lstat(p).st_nlink == 2
    else:
        assert _mtime(p) == UP_MTIME * NS


def test_dir_over_dir_replaces_xattrs(canary: Any) -> None:
    """A directory over a directory takes the upper xattrs only: stale lower ones are removed."""
    lower = Layer().dir("d", xattrs={"user.a": b"1"}).file("d/c", b"c")
    upper = Layer().dir("d", mode=0o700, mtime=UP_MTIME, xattrs={"user.b": b"2"})
    _apply(canary.dest, lower, upper)
    d = canary.dest / "d"
    names = {n for n in os.listxattr(d, follow_symlinks=False) if n.startswith("user.")}
    assert names == {"user.b"}
    assert os.getxattr(d, "user.b") == b"2"
    assert tree(canary.dest) == {"d": _d(0o700), "d/c": _f(b"c")}
    assert _mtime(d) == UP_MTIME * NS


def test_file_over_file_has_only_the_upper_xattrs(canary: Any) -> None:
    """A file over a file is a new file: none of the lower file's xattrs survive."""
    lower = Layer().file("f", b"old", xattrs={"user.a": b"1"})
    upper = Layer().file("f", b"new", xattrs={"user.b": b"2"})
    _apply(canary.dest, lower, upper)
    f = canary.dest / "f"
    names = {n for n in os.listxattr(f, follow_symlinks=False) if n.startswith("user.")}
    assert names == {"user.b"}
    assert f.read_bytes() == b"new"


# -- 6. never through a symlink or into a shared inode -----------------------


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("target", id="relative"),
        pytest.param("./target", id="dot-relative"),
        pytest.param("/target", id="absolute-in-root"),
        pytest.param("OUTSIDE", id="absolute-host-path"),
    ],
)
def test_file_over_symlink_does_not_write_through(canary: Any, target: str) -> None:
    """An upper file at a symlink's path replaces the link; the link's target keeps its content."""
    if target == "OUTSIDE":
        target = str(canary.outside / "victim")
    lower = Layer().file("target", b"old").symlink("f", target)
    upper = Layer().file("f", b"new", mode=0o600)
    _apply(canary.dest, lower, upper)
    assert tree(canary.dest) == {"target": _f(b"old"), "f": _f(b"new", 0o600)}


@pytest.mark.parametrize("rewritten", ["a", "b"])
def test_file_over_hardlink_does_not_write_into_the_inode(canary: Any, rewritten: str) -> None:
    """Rewriting one name of a hardlinked file leaves the other name's content and mode alone."""
    lower = Layer().file("a", b"old").hardlink("b", "a")
    upper = Layer().file(rewritten, b"new", mode=0o600)
    _apply(canary.dest, lower, upper)
    other = "b" if rewritten == "a" else "a"
    assert tree(canary.dest) == {rewritten: _f(b"new", 0o600), other: _f(b"old")}
    a, b = os.lstat(canary.dest / "a"), os.lstat(canary.dest / "b")
    assert a.st_ino != b.st_ino
    assert a.st_nlink == b.st_nlink == 1


# -- 7. parents --------------------------------------------------------------


PARENT_CASES = [
    pytest.param(
        Layer().file("p", b"lower"),
        Layer().file("p/child", b"c"),
        {"p": _d(), "p/child": _f(b"c")},
        id="file-parent",
    ),
    pytest.param(
        Layer().fifo("p"),
        Layer().file("p/child", b"c"),
        {"p": _d(), "p/child": _f(b"c")},
        id="fifo-parent",
    ),
    pytest.param(
        Layer().file("a", b"lower").file("keep", b"k"),
        Layer().file("a/b/c", b"c"),
        {"a": _d(), "a/b": _d(), "a/b/c": _f(b"c"), "keep": _f(b"k")},
        id="file-grandparent",
    ),
    pytest.param(
        Layer().dir("x").file("x/f", b"lower"),
        Layer().file("x/f/g/h", b"h"),
        {"x": _d(), "x/f": _d(), "x/f/g": _d(), "x/f/g/h": _f(b"h")},
        id="nested-file-parent",
    ),
]


@pytest.mark.parametrize(("lower", "upper", "expected"), PARENT_CASES)
def test_non_directory_parent_becomes_a_directory(
    canary: Any, strict_umask: None, lower: Layer, upper: Layer, expected: Tree
) -> None:
    """A file or FIFO in the way of an entry's parent is replaced by a 0755 directory."""
    _apply(canary.dest, lower, upper)
    assert tree(canary.dest) == expected


def test_missing_parents_are_created_0755(canary: Any, strict_umask: None) -> None:
    """Parents no entry lists are created with mode 0755 whatever the umask."""
    _apply(canary.dest, Layer().file("x/y/z/f", b"f").fifo("q/r/p"))
    assert tree(canary.dest) == {
        "x": _d(),
        "x/y": _d(),
        "x/y/z": _d(),
        "x/y/z/f": _f(b"f"),
        "q": _d(),
        "q/r": _d(),
        "q/r/p": _p(),
    }


def test_implicit_parent_takes_a_later_explicit_entry(canary: Any, strict_umask: None) -> None:
    """A parent made implicitly takes the mode and mtime of its own entry when it comes later."""
    _apply(canary.dest, Layer().file("x/f", b"f").dir("x", mode=0o700, mtime=UP_MTIME))
    assert tree(canary.dest) == {"x": _d(0o700), "x/f": _f(b"f")}
    assert _mtime(canary.dest / "x") == UP_MTIME * NS


# -- 8. the root entry -------------------------------------------------------


@pytest.mark.parametrize("name", ["./", "/", "."])
def test_root_entry_sets_the_root_mode_and_mtime(canary: Any, name: str) -> None:
    """A root directory entry gives DEST its mode and mtime, kept after later layers write."""
    lower = Layer().dir(name, mode=0o700, mtime=UP_MTIME).file("a", b"a")
    upper = Layer().file("b", b"b").dir("sub")
    _apply(canary.dest, lower, upper)
    st = os.lstat(canary.dest)
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_mtime_ns == UP_MTIME * NS
    assert tree(canary.dest) == {"a": _f(b"a"), "b": _f(b"b"), "sub": _d()}


ROOT_CHANGES = [
    pytest.param(Layer().symlink(".", "elsewhere"), id="symlink-relative"),
    pytest.param(Layer().symlink(".", "/"), id="symlink-to-slash"),
    pytest.param(Layer().symlink("./", "a"), id="symlink-dot-slash"),
    pytest.param(Layer().file(".", b"not a dir"), id="file"),
    pytest.param(Layer().fifo("."), id="fifo"),
    pytest.param(Layer().hardlink(".", "a"), id="hardlink"),
]


@pytest.mark.parametrize("upper", ROOT_CHANGES)
def test_root_type_change_is_refused(canary: Any, upper: Layer) -> None:
    """A root entry `.` that is not a directory is refused (exit 5) and DEST stays as it was."""
    _apply(canary.dest, Layer().dir(".", mode=0o750).file("a", b"a").dir("d"))
    before = _state(canary.dest)
    with pytest.raises(UnsafeEntryError) as info:
        _apply(canary.dest, upper)
    assert info.value.exit_code == EXIT_UNSAFE
    assert info.value.entry is not None
    assert not os.path.islink(canary.dest)
    assert _state(canary.dest) == before


# -- 9. duplicates in one layer ----------------------------------------------


DUPLICATE_CASES = [
    pytest.param(
        Layer().file("a", b"1").file("a", b"2", mode=0o600),
        {"a": _f(b"2", 0o600)},
        id="file-then-file",
    ),
    pytest.param(
        Layer().file("a", b"1").dir("a", mode=0o750), {"a": _d(0o750)}, id="file-then-dir"
    ),
    pytest.param(
        Layer().dir("a").file("a/c", b"c").symlink("a", "t"),
        {"a": _l("t")},
        id="dir-with-child-then-symlink",
    ),
    pytest.param(Layer().dir("a").symlink("a", "t"), {"a": _l("t")}, id="dir-then-symlink"),
    pytest.param(
        Layer().file("t", b"t").symlink("a", "t").file("a", b"2"),
        {"t": _f(b"t"), "a": _f(b"2")},
        id="symlink-then-file-not-through",
    ),
    pytest.param(
        Layer().dir("a").file("a/c", b"c").file("a", b"2"),
        {"a": _f(b"2")},
        id="dir-then-file",
    ),
]


@pytest.mark.parametrize(("layer", "expected"), DUPLICATE_CASES)
def test_duplicate_entry_last_wins(canary: Any, layer: Layer, expected: Tree) -> None:
    """A path listed twice in one layer ends as the last entry, counted and noticed once."""
    result = _apply(canary.dest, layer)
    assert tree(canary.dest) == expected
    assert result.layers[0].duplicates == 1
    dups = [n for n in result.warnings if n.event == "duplicate_entry"]
    assert [(n.layer, n.path) for n in dups] == [(0, "a")]


def test_duplicates_are_counted_per_layer(canary: Any) -> None:
    """Duplicates are reported against the layer that has them, not against earlier ones."""
    first = Layer().file("a", b"1").file("b", b"1")
    second = Layer().file("a", b"2").file("a", b"3").dir("c").dir("c", mode=0o700)
    result = _apply(canary.dest, first, second)
    assert [layer.duplicates for layer in result.layers] == [0, 2]
    dups = sorted((n.layer, n.path) for n in result.warnings if n.event == "duplicate_entry")
    assert dups == [(1, "a"), (1, "c")]
    assert tree(canary.dest) == {"a": _f(b"3"), "b": _f(b"1"), "c": _d(0o700)}


# -- 10. per-layer report ----------------------------------------------------


def test_layer_report_counts(canary: Any) -> None:
    """Each kind of entry is counted once in its own column; markers are not files."""
    _apply(canary.dest, Layer().file("gone", b"g").dir("etc").file("etc/old", b"o"))
    mixed = (
        Layer()
        .dir("etc")
        .file("etc/a", b"abc")
        .file("etc/b", b"de")
        .symlink("etc/l", "a")
        .hardlink("etc/h", "etc/a")
        .fifo("etc/p")
        .whiteout("gone")
        .opaque("etc")
        .file(".wh..wh.aufs")
        .dir("usr")
    )
    result = _apply(canary.dest, mixed)
    r = result.layers[0]
    got = {
        k: getattr(r, k)
        for k in (
            "entries",
            "whiteouts",
            "opaque_dirs",
            "hardlinks",
            "skipped",
            "files",
            "dirs",
            "symlinks",
            "specials",
            "bytes",
            "duplicates",
        )
    }
    assert got == {
        "entries": 10,
        "whiteouts": 1,
        "opaque_dirs": 1,
        "hardlinks": 1,
        "skipped": 1,
        "files": 2,
        "dirs": 2,
        "symlinks": 1,
        "specials": 1,
        "bytes": 5,
        "duplicates": 0,
    }
    assert result.entries == 10
    assert tree(canary.dest) == {
        "etc": _d(),
        "etc/a": _f(b"abc"),
        "etc/b": _f(b"de"),
        "etc/l": _l("a"),
        "etc/h": _f(b"abc"),
        "etc/p": _p(),
        "usr": _d(),
    }


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_layer_digest_and_diff_id(
    canary: Any, tmp_path_factory: pytest.TempPathFactory, compression: str
) -> None:
    """digest is the sha256 of the layer file's bytes, diff_id that of the uncompressed tar."""
    layer = _base()
    path = layer.write(tmp_path_factory.mktemp("blobs") / "layer", compression)
    result = apply_layers(canary.dest, [path, io.BytesIO(layer.bytes(compression))])
    blob = path.read_bytes()
    want_digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    want_diff_id = "sha256:" + hashlib.sha256(layer.tar()).hexdigest()
    for report in result.layers:
        assert report.compression == compression
        assert report.digest == want_digest
        assert report.diff_id == want_diff_id
        assert report.size == len(blob)
        assert report.uncompressed_size == len(layer.tar())
    if compression == "none":
        assert want_digest == want_diff_id
    else:
        assert want_digest != want_diff_id
    assert tree(canary.dest) == BASE_TREE


# -- 11. GNU tar differential ------------------------------------------------


def _full(top: Path) -> dict[str, object]:
    """tree() plus owner, the mtime of non-directories, and which names share an inode."""
    out: dict[str, object] = {}
    inodes: dict[int, list[str]] = {}
    for rel, path in _walk(top):
        st = os.lstat(path)
        mtime = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
        out[rel] = (_node(path), st.st_uid, st.st_gid, mtime)
        if not stat.S_ISDIR(st.st_mode):
            inodes.setdefault(st.st_ino, []).append(rel)
    out["<shared inodes>"] = sorted(sorted(names) for names in inodes.values() if len(names) > 1)
    return out


def _gnu_layers() -> list[Layer]:
    long_name = "usr/share/" + "n" * 120
    first = (
        Layer()
        .dir("usr", mtime=MTIME + 1)
        .dir("usr/bin", mode=0o750, mtime=MTIME + 2)
        .file("usr/bin/tool", b"#!/bin/sh\necho v1\n", mode=0o4755, mtime=MTIME + 3)
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .symlink("usr/bin/sh", "tool", mtime=MTIME + 4)
        .symlink("lib", "/usr/lib", mtime=MTIME + 5)
        .dir("usr/share", mode=0o755)
        .file(long_name, b"long", mode=0o600, uid=1000, gid=1000, mtime=MTIME + 6)
        .file("etc/conf", b"conf=1\n", mode=0o640, mtime=MTIME + 7)
        .dir("run", mode=0o1777)
        .fifo("run/fifo", mode=0o620, mtime=MTIME + 8)
        .file("empty", b"", mode=0o400, mtime=MTIME + 9)
        .dir("home", mode=0o2750, uid=1000, gid=100)
    )
    second = (
        Layer()
        .file("usr/bin/tool", b"#!/bin/sh\necho v2\n", mode=0o755, mtime=UP_MTIME)
        .symlink("etc/conf", "../usr/bin/tool", mtime=UP_MTIME + 1)
        .hardlink("etc/old-tool", "usr/bin/tool2")
        .dir("opt", mode=0o700, mtime=UP_MTIME + 2)
        .file("opt/app", b"app", mode=0o755, mtime=UP_MTIME + 3)
        .file("run/fifo", b"now a file", mode=0o644, mtime=UP_MTIME + 4)
        .symlink("empty", "opt/app", mtime=UP_MTIME + 5)
    )
    return [first, second]


def _gnu_dir_mtime(rel: str) -> int:
    info = next(i for i, _ in _gnu_layers()[0].members if i.name.rstrip("/") == rel)
    return int(info.mtime) * NS


@pytest.mark.peer
@pytest.mark.parametrize("count", [1, 2], ids=["one-layer", "two-layers"])
def test_same_tree_as_gnu_tar(
    canary: Any, tmp_path_factory: pytest.TempPathFactory, count: int
) -> None:
    """Without whiteouts, apply_layers builds the same tree as `tar -xp --numeric-owner`."""
    tar = shutil.which("tar")
    if tar is None:
        pytest.skip("GNU tar is not installed")
    layers = _gnu_layers()[:count]
    blobs = tmp_path_factory.mktemp("gnu-blobs")
    other = tmp_path_factory.mktemp("gnu-tree")
    for i, layer in enumerate(layers):
        path = layer.write(blobs / f"{i}.tar")
        subprocess.run(
            [tar, "-xpf", str(path), "--numeric-owner", "-C", str(other)],
            check=True,
            capture_output=True,
            preexec_fn=lambda: os.umask(0o022),
        )
    _apply(canary.dest, *layers)
    ours, theirs = _full(canary.dest), _full(other)
    assert ours == theirs
    assert len(ours) > 10
    # GNU tar sets a directory's mtime when it leaves it in archive order, so a directory
    # re-entered later gets "now"; the rules set every listed directory's mtime at the end.
    for rel in ("usr", "usr/bin", "usr/share", "run", "home"):
        assert _mtime(canary.dest / rel) == _gnu_dir_mtime(rel), rel


DEEP_DIRS = (
    "import resource, sys\n"
    "from extractor import apply_layers\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400))\n"
    "apply_layers(sys.argv[1], [sys.argv[2]])\n"
)


def test_directory_metadata_of_a_deep_tree_with_few_fds(tmp_path: Path) -> None:
    """Every directory of a tree 700 levels deep gets its mode and time at the end, the
    read-only ones after what is below them, within 400 fds (700 held at once would not
    fit), and siblings after a deep branch get theirs too."""
    layer = Layer()
    names = []
    for i in range(700):
        names.append(f"d{i % 3}")
        mode = 0o555 if i % 50 == 7 else 0o750
        layer.dir("/".join(names), mode=mode, mtime=MTIME + i)
    layer.file("/".join(names) + "/leaf", b"x")
    layer.dir("d0/d1/zz", mode=0o700, mtime=MTIME - 5).dir("zz", mode=0o711, mtime=MTIME - 6)
    src = layer.write(tmp_path / "deep.tar")
    dest = tmp_path / "r"
    proc = subprocess.run(
        [sys.executable, "-c", DEEP_DIRS, str(dest), str(src)], capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr.decode()
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, name in enumerate(names):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            assert stat.S_IMODE(st.st_mode) == (0o555 if i % 50 == 7 else 0o750), i
            assert st.st_mtime == MTIME + i, i
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    for path, mode, mtime in (("d0/d1/zz", 0o700, MTIME - 5), ("zz", 0o711, MTIME - 6)):
        st = (dest / path).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (mode, mtime), path
