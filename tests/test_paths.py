"""Pure path logic (``extractor.paths``) and the root-confined resolver ``Root.walk``.

The path functions are checked on tables and with hypothesis. ``Root.walk`` is
checked on real directories for every case, and on pyfakefs for the cases
that only resolve: pyfakefs runs ``os.open`` with ``O_PATH|O_DIRECTORY|
O_NOFOLLOW`` and ``dir_fd``, ``os.stat``/``os.readlink`` with ``dir_fd`` and
``os.dup``, but it has no ``/proc/self/fd/N/NAME`` magic links, which
``Root`` uses to chmod the directories it creates (``create=True``).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import Canary, interpreted_only
from hypothesis import given
from hypothesis import strategies as st

from extractor import UnsafeEntryError
from extractor.paths import ancestors, is_within, normalize, split
from extractor.rootfs import Root, RootOptions

MAX_LINKS = 40  # Linux MAXSYMLINKS: the limit the resolver must match

# -- normalize, split, ancestors, is_within --------------------------------------

NORMALIZE = {
    "empty": ("", ""),
    "slash": ("/", ""),
    "dot": (".", ""),
    "dot slash": ("./", ""),
    "dotdot": ("..", ""),
    "dotdots above an absolute root": ("/../..", ""),
    "plain": ("a", "a"),
    "dot slash prefix": ("./a", "a"),
    "absolute": ("/a", "a"),
    "trailing slash": ("a/", "a"),
    "doubled slashes": ("//etc///passwd/", "etc/passwd"),
    "dot component": ("a/./b", "a/b"),
    "dotdot inside": ("a/../b", "b"),
    "dotdot at the end": ("a/b/..", "a"),
    "climbing out is clamped": ("../../x", "x"),
    "climbing out from inside is clamped": ("a/../../b", "b"),
    "climbing far": ("a/b/../../../../c/d", "c/d"),
    "absolute climbing": ("/../etc/shadow", "etc/shadow"),
    "three dots is a name": ("a/.../b", "a/.../b"),
    "dot-prefixed names are names": (".wh..wh..opq", ".wh..wh..opq"),
    "whiteout of dotdot": ("d/.wh..", "d/.wh.."),
    "backslash is not a separator": ("a\\..\\b", "a\\..\\b"),
    "spaces are kept": (" a / b ", " a / b "),
    "surrogate escapes are kept": ("caf\udce9/x", "caf\udce9/x"),
    "dotdot then dot": ("./../.", ""),
}


@pytest.mark.parametrize(("name", "expected"), NORMALIZE.values(), ids=NORMALIZE)
def test_normalize(name: str, expected: str) -> None:
    """A member name maps to its path under the root, ``..`` clamped like a chroot."""
    assert normalize(name) == expected


SPLIT = {
    "root": ("", ("", "")),
    "top level": ("a", ("", "a")),
    "nested": ("a/b/c", ("a/b", "c")),
    "dotted names": ("a/.wh.b", ("a", ".wh.b")),
}


@pytest.mark.parametrize(("path", "expected"), SPLIT.values(), ids=SPLIT)
def test_split(path: str, expected: tuple[str, str]) -> None:
    """A normalised path splits into its parent and basename; the root has no basename."""
    assert split(path) == expected


ANCESTORS = {
    "root has none": ("", []),
    "top level": ("a", [""]),
    "nested": ("a/b/c", ["", "a", "a/b"]),
    "names with dots": ("a.b/c.d", ["", "a.b"]),
}


@pytest.mark.parametrize(("path", "expected"), ANCESTORS.values(), ids=ANCESTORS)
def test_ancestors(path: str, expected: list[str]) -> None:
    """Proper ancestors come root first, nearest last."""
    assert ancestors(path) == expected


IS_WITHIN = {
    "itself": ("a", "a", True),
    "child": ("a/b", "a", True),
    "grandchild": ("a/b/c", "a", True),
    "sibling sharing a prefix": ("ab", "a", False),
    "nested sibling sharing a prefix": ("a/bc", "a/b", False),
    "parent is not within child": ("a", "a/b", False),
    "root contains everything": ("a/b", "", True),
    "root contains itself": ("", "", True),
    "root is not within a dir": ("", "a", False),
    "unrelated": ("b/a", "a", False),
}


@pytest.mark.parametrize(("path", "top", "expected"), IS_WITHIN.values(), ids=IS_WITHIN)
def test_is_within(path: str, top: str, expected: bool) -> None:
    """``is_within`` compares whole components, never string prefixes."""
    assert is_within(path, top) is expected


COMPONENTS = st.sampled_from(["", ".", "..", "...", "a", "b", ".wh.a", "x y", "caf\udce9", "\\"])
NAMES = st.one_of(
    st.lists(COMPONENTS, max_size=12).map("/".join),
    st.text(alphabet="ab./\\", max_size=30),
)


@given(NAMES)
def test_normalize_output_is_clean_and_idempotent(name: str) -> None:
    """``normalize`` yields no ``..``, ``.`` or empty component, no leading ``/``; is idempotent."""
    out = normalize(name)
    assert not out.startswith("/")
    if out:
        assert all(part not in ("", ".", "..") for part in out.split("/"))
    assert normalize(out) == out


@given(NAMES)
def test_normalize_matches_a_chrooted_normpath(name: str) -> None:
    """``normalize`` agrees with ``posixpath.normpath`` of the name under ``/``."""
    reference = posixpath.normpath("/" + name.lstrip("/")).lstrip("/")
    assert normalize(name) == reference


@given(NAMES)
def test_ancestors_split_and_is_within_agree(name: str) -> None:
    """The parent from ``split`` is the nearest ancestor, and the path is within each ancestor."""
    path = normalize(name)
    found = ancestors(path)
    if not path:
        assert found == []
        return
    assert found[-1] == split(path)[0]
    assert all(is_within(path, top) for top in found)
    assert not any(is_within(top, path) for top in found)


# -- Root.walk: shared setup --------------------------------------------------------

Setup = tuple[tuple[str, ...], ...]  # ("dir", path) | ("file", path) | ("link", path, target)


def _build(dest: str, setup: Setup) -> None:
    for kind, path, *rest in setup:
        full = os.path.join(dest, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if kind == "dir":
            os.makedirs(full, exist_ok=True)
        elif kind == "file":
            with open(full, "w") as f:
                f.write("content of " + path)
        else:
            os.symlink(rest[0], full)


def _chain(count: int, end: str = "/d") -> Setup:
    """``l0 -> l1 -> ... -> l{count-1} -> end``: ``count`` links to follow from ``l0``."""
    links = tuple(("link", f"l{i}", f"l{i + 1}") for i in range(count - 1))
    return (("dir", "d"), *links, ("link", f"l{count - 1}", end))


@dataclass(frozen=True)
class Case:
    """Walk ``path`` after ``setup``; expect the physical path or an exception type."""

    setup: Setup
    path: str
    expected: str | type[Exception]


HOST = "/host-dir-for-walk-tests"

RESOLVE = {
    "plain directories": Case((("dir", "b/c"),), "b/c", "b/c"),
    "the root": Case((), "", ""),
    "absolute symlink resolves inside the root": Case(
        (("dir", "b/c"), ("link", "a", "/b")), "a/c", "b/c"
    ),
    "absolute symlink in a subdirectory restarts at the root": Case(
        (("dir", "b/c"), ("dir", "d/e/b/c"), ("link", "d/e/l", "/b")), "d/e/l/c", "b/c"
    ),
    "absolute target after a relative step": Case(
        (("dir", "b"), ("dir", "d/b"), ("link", "d/l", "../d/m"), ("link", "d/m", "/b")),
        "d/l",
        "b",
    ),
    "absolute symlink to a host path": Case(
        (("dir", HOST[1:]), ("link", "l", HOST)), "l", HOST[1:]
    ),
    "symlink to /": Case((("link", "r", "/"),), "r", ""),
    "dotdot symlink clamps at the root": Case(
        (("dir", "b"), ("link", "up", "../../../..")), "up/b", "b"
    ),
    "dotdot in a nested relative target clamps": Case(
        (("dir", "b"), ("link", "d/e/l", "../../../../../b")), "d/e/l", "b"
    ),
    "dotdot in the walked path clamps": Case((("dir", "b"),), "b/../../../b", "b"),
    "relative symlink": Case((("dir", "b"), ("link", "d/l", "../b")), "d/l", "b"),
    "target with dots and slashes": Case((("dir", "b/c"), ("link", "a", "/b/./c//")), "a", "b/c"),
    "chain of mixed links": Case(
        (
            ("dir", "d/sub"),
            ("link", "l1", "l2"),
            ("link", "l2", "/l3"),
            ("link", "l3", "d/sub"),
        ),
        "l1",
        "d/sub",
    ),
    "symlink inside a symlink target": Case(
        (("dir", "b/c"), ("link", "a", "/b"), ("link", "x", "/a/c")), "x", "b/c"
    ),
    f"{MAX_LINKS} links are followed": Case(_chain(MAX_LINKS), "l0", "d"),
    f"{MAX_LINKS + 1} links are a loop": Case(_chain(MAX_LINKS + 1), "l0", UnsafeEntryError),
    "self loop": Case((("link", "l", "l"),), "l/x", UnsafeEntryError),
    "two-link loop": Case((("link", "a", "b"), ("link", "b", "/a")), "a", UnsafeEntryError),
    "loop through its own child": Case((("link", "l", "l/x"),), "l", UnsafeEntryError),
    "dotdot loop": Case((("dir", "d"), ("link", "d/l", "../d/l")), "d/l", UnsafeEntryError),
    "missing component": Case((("dir", "b"),), "b/nope/x", FileNotFoundError),
    "dangling symlink": Case((("link", "l", "/missing"),), "l", FileNotFoundError),
    "regular file component": Case((("file", "f"),), "f/x", FileNotFoundError),
    "symlink to a regular file": Case((("file", "f"), ("link", "l", "/f")), "l", FileNotFoundError),
}


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _assert_physical(dest: str, fd: int, physical: str) -> None:
    """``physical`` names, without any symlink, the directory ``fd`` is open on."""
    assert not physical.startswith("/") and ".." not in physical.split("/")
    where = dest
    for part in physical.split("/") if physical else []:
        where = os.path.join(where, part)
        assert not os.path.islink(where), f"{where} is a symlink"
    st = os.stat(where, follow_symlinks=False)
    assert stat.S_ISDIR(st.st_mode)
    assert (os.fstat(fd).st_dev, os.fstat(fd).st_ino) == (st.st_dev, st.st_ino)


def _walk(dest: str, case: Case, create: bool) -> str | type[Exception]:
    root = Root(dest, RootOptions(), lambda *a: None)
    try:
        try:
            fd, physical = root.walk(case.path, create=create)
        except (UnsafeEntryError, FileNotFoundError) as e:
            return type(e)
        try:
            _assert_physical(dest, fd, physical)
        finally:
            os.close(fd)
        return physical
    finally:
        root.close()


@pytest.fixture
def real_root(canary: Canary) -> Iterator[str]:
    """A real root directory beside the canary's host files."""
    yield str(canary.dest.resolve())


@pytest.mark.parametrize("case", RESOLVE.values(), ids=RESOLVE)
def test_walk_resolves_inside_the_root(real_root: str, case: Case) -> None:
    """``walk(create=False)`` resolves like a chroot, on a real tree, leaking no fd."""
    os.makedirs(real_root, exist_ok=True)
    _build(real_root, case.setup)
    before = _open_fds()
    assert _walk(real_root, case, create=False) == case.expected
    assert _open_fds() == before


@interpreted_only
@pytest.mark.parametrize("case", RESOLVE.values(), ids=RESOLVE)
def test_walk_resolves_inside_the_root_on_pyfakefs(fs: object, case: Case) -> None:
    """The same resolutions hold on pyfakefs, whose host directories are all fake."""
    dest = "/fake-root"
    os.makedirs(dest)
    os.makedirs(HOST + "/untouched")
    _build(dest, case.setup)
    assert _walk(dest, case, create=False) == case.expected
    assert os.listdir(HOST) == ["untouched"]


# -- Root.walk with create=True (real trees only: see the module docstring) ----------------


@dataclass(frozen=True)
class CreateCase:
    """Walk ``path`` with ``create=True``; expect the physical path and what it made."""

    setup: Setup
    path: str
    expected: str
    made: tuple[str, ...]  # directories that must exist afterwards (physical)
    links: tuple[str, ...] = ()  # symlinks that must still be symlinks


CREATE = {
    "missing parents are made": CreateCase((), "x/y/z", "x/y/z", ("x", "x/y", "x/y/z")),
    "missing parents under an existing dir": CreateCase(
        (("dir", "a"),), "a/new/deeper", "a/new/deeper", ("a/new",)
    ),
    "dangling absolute symlink gets its target made": CreateCase(
        (("link", "l", "/missing/deep"),), "l/sub", "missing/deep/sub", ("missing/deep",), ("l",)
    ),
    "symlink to a host path is made inside the root": CreateCase(
        (("link", "l", "HOST"),), "l/new", "HOST/new", ("HOST/new",), ("l",)
    ),
    "absolute symlink in a subdirectory is made from the root": CreateCase(
        (("link", "d/l", "/new/x"),), "d/l/y", "new/x/y", ("new/x/y",), ("d/l",)
    ),
    "climbing out is made inside the root": CreateCase((), "../../escape", "escape", ("escape",)),
    "regular file component becomes a directory": CreateCase(
        (("file", "f"),), "f/x", "f/x", ("f", "f/x")
    ),
    "symlink to a regular file: the file becomes a directory": CreateCase(
        (("file", "f"), ("link", "l", "/f")), "l/x", "f/x", ("f/x",), ("l",)
    ),
    "fifo component becomes a directory": CreateCase(
        (("dir", "p"),), "p/fifo/x", "p/fifo/x", ("p/fifo/x",)
    ),
}


@pytest.mark.parametrize("case", CREATE.values(), ids=CREATE)
def test_walk_create_makes_directories_inside_the_root(
    real_root: str, canary: Canary, case: CreateCase
) -> None:
    """``walk(create=True)`` makes what is missing, 0755 whatever the umask, all inside the root."""
    host = str(canary.outside)[1:]
    os.makedirs(real_root, exist_ok=True)
    setup = tuple(tuple(f.replace("HOST", "/" + host) for f in item) for item in case.setup)
    _build(real_root, setup)
    if case.path.startswith("p/fifo"):
        os.mkfifo(os.path.join(real_root, "p", "fifo"))
    old_umask = os.umask(0o077)
    try:
        got = _walk(real_root, Case(setup, case.path, ""), create=True)
    finally:
        os.umask(old_umask)
    assert got == case.expected.replace("HOST", host)
    for made in case.made:
        full = os.path.join(real_root, made.replace("HOST", host))
        st = os.lstat(full)
        assert stat.S_ISDIR(st.st_mode), made
        assert stat.S_IMODE(st.st_mode) == 0o755, made
    for link in case.links:
        assert os.path.islink(os.path.join(real_root, link)), link


@pytest.mark.parametrize(
    "case",
    [RESOLVE["missing component"], RESOLVE["regular file component"]],
    ids=["missing component", "regular file component"],
)
def test_walk_without_create_changes_nothing(real_root: str, case: Case) -> None:
    """``walk(create=False)`` raises FileNotFoundError and leaves the tree as it was."""
    os.makedirs(real_root, exist_ok=True)
    _build(real_root, case.setup)
    before = sorted(os.walk(real_root))
    assert _walk(real_root, case, create=False) is FileNotFoundError
    assert sorted(os.walk(real_root)) == before
    if case.setup[0][0] == "file":
        assert os.path.isfile(os.path.join(real_root, "f"))


@pytest.mark.parametrize(
    "name", [f"{MAX_LINKS + 1} links are a loop", "self loop", "two-link loop"]
)
def test_walk_create_still_refuses_loops(real_root: str, name: str) -> None:
    """A symlink loop is an UnsafeEntryError with ``create=True`` too, and makes nothing."""
    case = RESOLVE[name]
    os.makedirs(real_root, exist_ok=True)
    _build(real_root, case.setup)
    before = sorted(os.listdir(real_root))
    assert _walk(real_root, case, create=True) is UnsafeEntryError
    assert sorted(os.listdir(real_root)) == before
