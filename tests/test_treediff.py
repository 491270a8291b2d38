"""``extractor diff`` and ``walk_tree``: every field detected, streaming, read-only, exit statuses.

Trees are built with plain ``os`` calls in tmp_path (tmpfs), A and B separately, so
their inode numbers and times differ unless a test freezes the times.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import AS_NOBODY, IS_ROOT, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extractor import treediff
from extractor.treediff import (
    DIFFERENCE_KINDS,
    FD_WINDOW,
    Difference,
    TreeError,
    diff_trees,
    walk_tree,
)

MODULE = [sys.executable, "-m", "extractor"]
T0 = 1_600_000_000 * 1_000_000_000


def _xattrs_supported(path: Path) -> bool:
    probe = path / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


def make_tree(root: Path) -> Path:
    """A small rootfs: dirs, files, a setuid binary, a symlink, a hardlink pair, a FIFO."""
    root.mkdir()
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_bytes(b"root:x:0:0\n")
    (root / "bin").mkdir()
    (root / "bin" / "su").write_bytes(b"su")
    os.chmod(root / "bin" / "su", 0o755)
    (root / "solo").write_bytes(b"s")
    (root / "hard1").write_bytes(b"h")
    os.link(root / "hard1", root / "hard2")
    os.symlink("etc/passwd", root / "link")
    os.mkfifo(root / "fifo")
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    if IS_ROOT:
        os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return root


def freeze(root: Path, ns: int = T0) -> None:
    """Give every entry (directories last, deepest first) the same mtime."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames]:
            os.utime(os.path.join(dirpath, name), ns=(ns, ns), follow_symlinks=False)
    os.utime(root, ns=(ns, ns))


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    """Two separately built, identical trees A and B."""
    return make_tree(tmp_path / "a"), make_tree(tmp_path / "b")


def diffs(a: Path, b: Path, **kw: Any) -> list[tuple[str, str, str | None, str | None]]:
    """The differences as plain tuples."""
    return [(d.path, d.kind, d.a, d.b) for d in diff_trees(a, b, **kw)]


def sha(data: bytes) -> str:
    """``sha256:<hex>`` as the diff shows contents."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``python -m extractor ARGS``, text output, no Traceback allowed."""
    proc = subprocess.run(
        [*MODULE, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, **kw
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


# -- one case per kind --------------------------------------------------------------------

Mutation = Callable[[Path, Path], None]


def _retype(a: Path, b: Path) -> None:
    (b / "solo").unlink()
    (b / "solo").mkdir()
    (b / "solo" / "inside").write_bytes(b"hidden by the type difference")


def _regroup(a: Path, b: Path) -> None:
    (b / "hard2").unlink()
    (b / "hard2").write_bytes(b"h")


def _relink(a: Path, b: Path) -> None:
    (b / "solo").unlink()
    os.link(b / "hard1", b / "solo")
    (a / "solo").write_bytes(b"h")


def _subtree_only_in_a(a: Path, b: Path) -> None:
    (a / "opt" / "deep").mkdir(parents=True)
    (a / "opt" / "deep" / "file").write_bytes(b"x")


CASES: dict[str, tuple[Mutation, list[tuple[str, str, str | None, str | None]]]] = {
    "type": (_retype, [("solo", "type", "file", "dir")]),
    "mode": (
        lambda a, b: os.chmod(b / "etc" / "passwd", 0o600),
        [("etc/passwd", "mode", "0644", "0600")],
    ),
    "setuid": (
        lambda a, b: os.chmod(b / "bin" / "su", 0o4755),
        [("bin/su", "mode", "0755", "4755")],
    ),
    "sticky-dir": (lambda a, b: os.chmod(b / "tmp", 0o777), [("tmp", "mode", "1777", "0777")]),
    "size": (
        lambda a, b: (b / "solo").write_bytes(b"ss"),
        [("solo", "size", "1", "2")],
    ),
    "content": (
        lambda a, b: (b / "solo").write_bytes(b"t"),
        [("solo", "content", sha(b"s"), sha(b"t"))],
    ),
    "symlink-target": (
        lambda a, b: ((b / "link").unlink(), os.symlink("/etc/shadow", b / "link")),
        [("link", "target", "etc/passwd", "/etc/shadow")],
    ),
    "xattr-added": (
        lambda a, b: os.setxattr(b / "solo", "user.new", b"v"),
        [("solo", "xattr", None, "user.new='v'")],
    ),
    "xattr-changed": (
        lambda a, b: (
            os.setxattr(a / "etc", "user.k", b"one"),
            os.setxattr(b / "etc", "user.k", b"\x00\xff"),
        ),
        [("etc", "xattr", "user.k='one'", "user.k=0x00ff")],
    ),
    "xattr-removed": (
        lambda a, b: os.setxattr(a / "solo", "user.gone", b"v"),
        [("solo", "xattr", "user.gone='v'", None)],
    ),
    "hardlink-split": (_regroup, [("hard2", "hardlink", "hard1", None)]),
    "hardlink-joined": (_relink, [("solo", "hardlink", None, "hard1")]),
    "only-in-a": (
        lambda a, b: (b / "etc" / "passwd").unlink(),
        [("etc/passwd", "only-in-a", "file", None)],
    ),
    "only-in-b": (
        lambda a, b: (b / "etc" / "new").write_bytes(b""),
        [("etc/new", "only-in-b", None, "file")],
    ),
    "only-in-a-subtree-once": (_subtree_only_in_a, [("opt", "only-in-a", "dir", None)]),
    "fifo-vs-file": (
        lambda a, b: ((b / "fifo").unlink(), (b / "fifo").write_bytes(b"")),
        [("fifo", "type", "fifo", "file")],
    ),
}
XATTR_CASES = {name for name in CASES if name.startswith("xattr")}


@pytest.mark.parametrize("case", CASES)
def test_each_kind_of_difference(trees: tuple[Path, Path], case: str) -> None:
    """Each single change is reported as exactly one difference of its kind, nothing else."""
    a, b = trees
    if case in XATTR_CASES and not _xattrs_supported(a):
        pytest.skip("this filesystem has no user.* xattrs")
    mutate, expected = CASES[case]
    assert diffs(a, b) == []
    mutate(a, b)
    assert diffs(a, b) == expected
    assert {kind for _, kind, _, _ in expected} <= set(DIFFERENCE_KINDS)


@pytest.mark.root
def test_owner_difference(trees: tuple[Path, Path]) -> None:
    """A changed uid or gid is an owner difference, on files and on symlinks (not followed)."""
    a, b = trees
    os.chown(b / "solo", 1000, 2000)
    os.chown(b / "link", 0, 7, follow_symlinks=False)
    assert diffs(a, b) == [
        ("link", "owner", "0:0", "0:7"),
        ("solo", "owner", "0:0", "1000:2000"),
    ]
    assert os.stat(b / "etc" / "passwd").st_gid == 0  # the link's target kept its group


@pytest.mark.root
def test_device_numbers_difference(trees: tuple[Path, Path]) -> None:
    """Device nodes compare major:minor; char versus block is a type difference."""
    a, b = trees
    os.unlink(b / "null")
    os.mknod(b / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    os.mknod(a / "blk", 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    os.mknod(b / "blk", 0o600 | stat.S_IFCHR, os.makedev(7, 0))
    assert diffs(a, b) == [("blk", "type", "block", "char"), ("null", "device", "1:3", "1:5")]


def test_mtime_only_with_flag(trees: tuple[Path, Path]) -> None:
    """Modification times count only with mtime=True, for files, symlinks and directories."""
    a, b = trees
    freeze(a)
    freeze(b)
    assert diffs(a, b, mtime=True) == []
    os.utime(b / "solo", ns=(T0, T0 + 500_000_000))
    os.utime(b / "link", ns=(T0, T0 - 1_000_000_000), follow_symlinks=False)
    os.utime(b / "etc", ns=(T0, T0 + 7_000_000_000))
    assert diffs(a, b) == []
    assert diffs(a, b, mtime=True) == [
        ("etc", "mtime", "1600000000", "1600000007"),
        ("link", "mtime", "1600000000", "1599999999"),
        ("solo", "mtime", "1600000000", "1600000000.5"),
    ]


def test_root_directory_is_compared(trees: tuple[Path, Path]) -> None:
    """The roots' own mode and mtime are compared, reported at path '.'."""
    a, b = trees
    freeze(a)
    freeze(b)
    os.utime(b, ns=(T0, T0 + 1_000_000_000))
    os.chmod(b, 0o700)
    os.chmod(a, 0o755)
    assert diffs(a, b, mtime=True) == [
        (".", "mode", "0755", "0700"),
        (".", "mtime", "1600000000", "1600000001"),
    ]


def test_several_differences_in_walk_order(trees: tuple[Path, Path]) -> None:
    """Differences come out in walk order: depth first, names sorted bytewise."""
    a, b = trees
    (b / "zz").write_bytes(b"")
    (b / "etc" / "passwd").write_bytes(b"other")
    (a / "aa").mkdir()
    os.chmod(b / "bin", 0o700)
    assert [(p, k) for p, k, _, _ in diffs(a, b)] == [
        ("aa", "only-in-a"),
        ("bin", "mode"),
        ("etc/passwd", "size"),
        ("zz", "only-in-b"),
    ]


def test_hardlink_groups_compared_by_paths_not_inodes(tmp_path: Path) -> None:
    """Groups {x, y}, {z} versus {x}, {y, z}: y and z differ; inode numbers don't matter."""
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
        for name in "xyz":
            (root / name).write_bytes(b"same")
    for path in (a / "y", b / "z"):
        path.unlink()
    os.link(a / "x", a / "y")
    os.link(b / "y", b / "z")
    assert diffs(a, b) == [("y", "hardlink", "x", None), ("z", "hardlink", None, "y")]
    c = tmp_path / "c"
    shutil.copytree(a, c, copy_function=shutil.copy2)
    os.unlink(c / "y")
    os.link(c / "x", c / "y")  # same grouping, other inodes
    assert diffs(a, c) == []


def test_content_of_a_shared_inode_is_not_read(tmp_path: Path) -> None:
    """Trees hardlinked to each other (cp -al) compare equal without reading contents."""
    a = make_tree(tmp_path / "a")
    b = tmp_path / "b"
    subprocess.run(["cp", "-al", str(a), str(b)], check=True)

    def never(*args: Any) -> str:
        raise AssertionError("a shared inode was read")

    mp = pytest.MonkeyPatch()
    mp.setattr(treediff, "_sha256", never)
    try:
        assert diffs(a, b) == []
        (b / "solo").unlink()
        (b / "solo").write_bytes(b"s")  # a new inode: now it must be read
        with pytest.raises(AssertionError, match="shared inode was read"):
            diffs(a, b)
    finally:
        mp.undo()


# -- symlinks are never followed ----------------------------------------------------------


def test_symlinks_are_compared_as_links_never_followed(tmp_path: Path) -> None:
    """Links to /etc or to differing host dirs compare as links: nothing behind them is read."""
    a, b = tmp_path / "a", tmp_path / "b"
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    for root, host, data in ((a, host_a, b"one"), (b, host_b, b"two, longer")):
        root.mkdir()
        host.mkdir()
        (host / "file").write_bytes(data)
        os.symlink("/etc", root / "etc")
        os.symlink("/etc/passwd", root / "passwd")
        os.symlink("../host", root / "up")
        (root / "dir").mkdir()
        os.symlink(str(host), root / "dir" / "host")
    # Each tree's "dir/host" points at its own host directory: only the targets differ.
    assert diffs(a, b) == [("dir/host", "target", str(host_a), str(host_b))]
    walked = [r.path for r in walk_tree(a)]
    assert walked == [".", "dir", "dir/host", "etc", "passwd", "up"]


def test_root_given_as_symlink_is_followed_once(tmp_path: Path) -> None:
    """The root argument itself may be a symlink to a directory (like diff -r); nothing below is."""
    real = make_tree(tmp_path / "real")
    os.symlink(real, tmp_path / "alias")
    assert diffs(tmp_path / "alias", real) == []


# -- --ignore -----------------------------------------------------------------------------

IGNORE_CASES = {
    "exact-file": (["etc/passwd"], ["solo"]),
    "directory-hides-subtree": (["etc"], ["solo"]),
    "glob": (["*passwd", "sol?"], []),
    "leading-dot-slash": (["./etc/*", "/solo"], []),
    "trailing-slash": (["etc/"], ["solo"]),
    "no-match": (["nothing*"], ["etc/passwd", "solo"]),
}


@pytest.mark.parametrize("case", IGNORE_CASES)
def test_ignore_patterns(trees: tuple[Path, Path], case: str) -> None:
    """fnmatch patterns on relative paths hide entries, and a directory its whole subtree."""
    a, b = trees
    (b / "etc" / "passwd").write_bytes(b"changed")
    (b / "solo").write_bytes(b"changed")
    patterns, left = IGNORE_CASES[case]
    assert [p for p, _, _, _ in diffs(a, b, ignore=patterns)] == left


def test_ignored_directory_is_not_read(tmp_path: Path) -> None:
    """An ignored directory is never opened: an unreadable one there is no error."""
    a, b = make_tree(tmp_path / "a"), make_tree(tmp_path / "b")
    calls: list[str] = []
    real_open = os.open

    def spy(path: Any, *args: Any, **kw: Any) -> int:
        calls.append(os.fsdecode(path))
        return real_open(path, *args, **kw)

    (a / "proc" / "1").mkdir(parents=True)
    os.symlink("x", a / "proc" / "1" / "exe")
    mp = pytest.MonkeyPatch()
    mp.setattr(os, "open", spy)
    try:
        assert diffs(a, b, ignore=["proc"]) == []
    finally:
        mp.undo()
    assert "proc" not in calls and "1" not in calls


# -- walk_tree ----------------------------------------------------------------------------


def test_walk_order_and_records(tmp_path: Path) -> None:
    """Walk order is depth first, names sorted bytewise (a, a/b, a-c); records carry the fields."""
    root = tmp_path / "t"
    root.mkdir()
    (root / "a").mkdir()
    (root / "a" / "b").write_bytes(b"12345")
    (root / "a-c").write_bytes(b"")
    (root / "B").write_bytes(b"")
    os.link(root / "a" / "b", root / "z")
    os.symlink("a/b", root / "s")
    raw = os.fsencode(root) + b"/\xff-latin1"
    with open(raw, "wb"):
        pass
    records = list(walk_tree(root))
    assert [r.path for r in records] == [".", "B", "a", "a/b", "a-c", "s", "z", "\udcff-latin1"]
    by = {r.path: r for r in records}
    assert by["a/b"].kind == "file" and by["a/b"].size == 5 and by["a/b"].link is None
    assert by["z"].link == "a/b" and by["z"].nlink == 2
    assert by["s"].kind == "symlink" and by["s"].target == "a/b" and by["s"].size == 0
    assert by["a"].kind == "dir" and by["a"].size == 0 and by["."].kind == "dir"
    assert by["a-c"].mode == stat.S_IMODE(os.lstat(root / "a-c").st_mode)


def test_walk_skips_ignored_and_closes_its_fds(tmp_path: Path) -> None:
    """A walk left half-way releases its directory fds on close()."""
    root = make_tree(tmp_path / "t")
    before = len(os.listdir("/proc/self/fd"))
    walker = walk_tree(root, ignore=["bin"])
    paths = [next(walker).path for _ in range(3)]
    assert paths == [".", "etc", "etc/passwd"]
    assert len(os.listdir("/proc/self/fd")) > before
    walker.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_deep_tree_uses_a_bounded_number_of_fds(tmp_path: Path) -> None:
    """A tree deeper than FD_WINDOW is walked with at most FD_WINDOW directory fds, and compared."""
    depth = FD_WINDOW * 2 + 7
    roots = []
    for side in "ab":
        root = tmp_path / side
        path = root
        for i in range(depth):
            path = path / f"d{i % 3}"
        path.mkdir(parents=True)
        (path / "leaf").write_bytes(side.encode())
        # siblings after the deep branch force returning to closed ancestors
        (root / "d0" / "d1" / "zz").write_bytes(b"")
        (root / "zz").write_bytes(b"")
        roots.append(root)
    before = len(os.listdir("/proc/self/fd"))
    most = 0
    count = 0
    for _record in walk_tree(roots[0]):
        most = max(most, len(os.listdir("/proc/self/fd")) - before)
        count += 1
    assert count == 1 + depth + 1 + 2
    assert most <= FD_WINDOW + 2
    deep = "/".join(f"d{i % 3}" for i in range(depth)) + "/leaf"
    assert diffs(roots[0], roots[1]) == [(deep, "content", sha(b"a"), sha(b"b"))]


def test_diff_writes_nothing(trees: tuple[Path, Path]) -> None:
    """Comparing changes nothing in either tree (modes, owners, mtimes, contents, links)."""
    a, b = trees
    os.chmod(a / "etc", 0o555)
    (b / "solo").write_bytes(b"t")
    before = (snapshot(a), snapshot(b))
    try:
        assert diffs(a, b, mtime=True)
        assert (snapshot(a), snapshot(b)) == before
    finally:
        os.chmod(a / "etc", 0o755)  # so that a non-root run can clean up


def test_sockets_are_compared_by_type(tmp_path: Path) -> None:
    """A unix socket is an entry of type 'socket', never opened."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(a / "s"))
        (b / "s").write_bytes(b"")
        assert diffs(a, b) == [("s", "type", "socket", "file")]
    finally:
        sock.close()


def test_difference_text_lines() -> None:
    """The readable line forms, with control characters and non-UTF-8 bytes escaped."""
    assert str(Difference("etc/x", "mode", "0644", "0600")) == "etc/x: mode: 0644 != 0600"
    assert str(Difference("a", "xattr", None, "user.k='v'")) == "a: xattr: (none) != user.k='v'"
    assert str(Difference("new", "only-in-b", None, "dir")) == "new: only in B (dir)"
    assert str(Difference("old", "only-in-a", "file", None)) == "old: only in A (file)"
    assert str(Difference("bad\nname\udcff", "size", "1", "2")) == "bad\\nname\\xff: size: 1 != 2"


# -- the command --------------------------------------------------------------------------


def test_cli_text_output_and_exit_statuses(trees: tuple[Path, Path], tmp_path: Path) -> None:
    """Exit 0 and no output when equal; 1 with one line per difference; -q prints nothing."""
    a, b = trees
    same = run("diff", str(a), str(b))
    assert (same.returncode, same.stdout, same.stderr) == (0, "", "")
    os.chmod(b / "bin" / "su", 0o4755)
    (b / "etc" / "passwd").unlink()
    differ = run("diff", str(a), str(b))
    assert differ.returncode == 1
    assert differ.stdout.splitlines() == [
        "bin/su: mode: 0755 != 4755",
        "etc/passwd: only in A (file)",
    ]
    quiet = run("diff", "-q", str(a), str(b))
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (1, "", "")
    ignored = run("diff", str(a), str(b), "--ignore", "bin", "--ignore", "etc/*")
    assert (ignored.returncode, ignored.stdout) == (0, "")


def test_cli_json_schema(trees: tuple[Path, Path]) -> None:
    """--json prints one document: schema, equal, and differences with path/kind/a/b."""
    a, b = trees
    doc = json.loads(run("diff", "--json", str(a), str(b)).stdout)
    assert doc == {"schema": "extractor.diff/v1", "equal": True, "differences": []}
    (b / "solo").write_bytes(b"t")
    (b / "extra").mkdir()
    proc = run("diff", "--json", "--mtime", str(a), str(b))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "extractor.diff/v1" and doc["equal"] is False
    assert all(set(d) == {"path", "kind", "a", "b"} for d in doc["differences"])
    by_path = {(d["path"], d["kind"]): d for d in doc["differences"]}
    assert by_path[("extra", "only-in-b")] == {
        "path": "extra",
        "kind": "only-in-b",
        "a": None,
        "b": "dir",
    }
    assert by_path[("solo", "content")]["a"] == sha(b"s")
    assert ("solo", "mtime") in by_path and (".", "mtime") in by_path


ERRORS = {
    "missing-a": lambda a, b: (str(a.parent / "nope"), str(b)),
    "missing-b": lambda a, b: (str(a), str(b.parent / "nope")),
    "a-is-a-file": lambda a, b: (str(a / "solo"), str(b)),
}


@pytest.mark.parametrize("case", ERRORS)
def test_cli_errors_exit_2_with_one_line(trees: tuple[Path, Path], case: str) -> None:
    """A missing tree or a non-directory is exit status 2 and one 'extractor: error:' line."""
    args = ERRORS[case](*trees)
    proc = run("diff", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("extractor: error: ")


def test_unreadable_directory_is_exit_2(shm_dir: Path) -> None:
    """A directory the user can't list (as uid 65534 when root) is exit status 2, one line."""
    a, b = make_tree(shm_dir / "a"), make_tree(shm_dir / "b")
    os.chmod(a / "etc", 0o000)
    os.chmod(b / "etc", 0o000)
    prefix = []
    if IS_ROOT:
        prefix = AS_NOBODY
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    try:
        proc = subprocess.run(
            [*prefix, *MODULE, "diff", str(a), str(b)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=shm_dir,
            env=env,
        )
    finally:
        os.chmod(a / "etc", 0o755)
        os.chmod(b / "etc", 0o755)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"extractor: error: {a}/etc: Permission denied"]


def test_unreadable_file_is_an_error_not_a_difference(tmp_path: Path) -> None:
    """A file that can't be read for hashing raises TreeError naming it."""
    a, b = make_tree(tmp_path / "a"), make_tree(tmp_path / "b")
    (b / "solo").write_bytes(b"t")

    real_open = os.open

    def deny(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if os.fsdecode(path) == "solo" and not flags & os.O_DIRECTORY:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(os, "open", deny)
    try:
        with pytest.raises(TreeError, match=r"/a/solo: Permission denied$") as info:
            list(diff_trees(a, b))
    finally:
        mp.undo()
    assert info.value.exit_code == 2


# -- property: a cp -a copy is equal ------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "a-b", "a.b", "B", "é", "z z"])
ENTRY = st.tuples(
    st.lists(NAMES, min_size=1, max_size=3),
    st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo"]),
    st.binary(max_size=64),
    st.sampled_from([0o644, 0o600, 0o755, 0o4755, 0o2711, 0o1777]),
    st.integers(min_value=0, max_value=2**31),
)


def _plain_dirs(root: Path, parts: list[str]) -> bool:
    """Make the directories ``parts`` under ``root``; False if one is something else."""
    path = root
    for part in parts:
        path = path / part
        if not os.path.lexists(path):
            path.mkdir()
        elif not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
    return True


def _build(root: Path, entries: list[tuple[list[str], str, bytes, int, int]]) -> None:
    root.mkdir()
    files: list[Path] = []
    for parts, kind, data, mode, mtime in entries:
        path = root.joinpath(*parts)
        if os.path.lexists(path) or not _plain_dirs(root, parts[:-1]):
            continue
        if kind == "file":
            path.write_bytes(data)
            files.append(path)
        elif kind == "dir":
            path.mkdir()
        elif kind == "symlink":
            os.symlink(data.replace(b"\0", b"").decode("latin-1") or ".", path)
        elif kind == "hardlink" and files:
            os.link(files[mtime % len(files)], path)
        elif kind == "fifo":
            os.mkfifo(path)
        if kind != "symlink" and os.path.lexists(path):
            os.chmod(path, mode if kind != "dir" else mode | 0o700)
            os.utime(path, ns=(mtime * 1000, mtime * 1000))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=st.lists(ENTRY, max_size=12))
def test_property_cp_a_copy_is_equal(
    tmp_path: Path, entries: list[tuple[list[str], str, bytes, int, int]]
) -> None:
    """For any small tree, diff of the tree and its `cp -a` copy is empty, even with mtimes."""
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        a = work / "a"
        _build(a, entries)
        subprocess.run(["cp", "-a", str(a), str(work / "b")], check=True)
        assert diffs(a, work / "b", mtime=True) == []
    finally:
        shutil.rmtree(work)
