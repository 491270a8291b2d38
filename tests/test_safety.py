"""Hostile layers: nothing outside DEST may be created, changed, deleted, linked or touched.

Every test applies layers into ``canary.dest`` (``<tmp>/rootfs``) beside a
host directory ``canary.outside`` (``<tmp>/outside``: ``passwd``, ``victim``
mode 0640, ``dir/file``). Two guards check every test after it ran:

- the ``canary`` fixture (conftest): contents, modes, owners, mtimes and link
  counts of the host files, and nothing new beside the root;
- the ``host`` fixture (here): the host files' ctimes (any chmod, chown,
  utime, link or xattr change moves them, even to the same value), their
  xattrs, the attributes of ``<tmp>`` and ``<tmp>/..``, escape marker names in
  every ancestor of the root, and that no node under DEST shares an inode
  with a host file.

Each case also asserts its own outcome: either the correct in-root result
(absolute symlinks and ``..`` resolve as in a chroot into DEST) or a clean
``ExtractorError`` subclass, never another exception. Every apply runs under
a SIGALRM deadline, so a hang fails the test instead of stalling the run.

Hostile links that a broken engine could follow for a *removal* point only at
the canary, never at ``/`` or ``/proc/self/fd/N``: a regression must fail a
test, not wipe or replace host files (``/proc/self/fd/3`` is often
``/dev/null``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import signal
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from builders import MTIME, Layer
from conftest import AS_NOBODY, NOBODY, Canary, snapshot

from extractor import (
    ApplyOptions,
    ApplyResult,
    BadInputError,
    ExtractorError,
    UnsafeEntryError,
    apply_layers,
)

DEADLINE = 3.0  # seconds an apply may take before it counts as a hang
MARKERS = ("zz-escape", "zz-abs")  # names hostile entries try to plant above the root
EVIL = b"written by a hostile layer\n"
ROOT_ONLY = pytest.mark.root

OPTIONS = [
    pytest.param(ApplyOptions(), id="privileged"),
    pytest.param(ApplyOptions(rootless=True), id="rootless"),
]


# -- guards -----------------------------------------------------------------


class HangError(BaseException):
    """An apply ran past the deadline (BaseException so no ``except Exception`` eats it)."""


@contextlib.contextmanager
def deadline(seconds: float = DEADLINE) -> Iterator[None]:
    """Raise ``HangError`` in the main thread if the block runs longer than ``seconds``."""

    def fire(signum: int, frame: FrameType | None) -> None:
        raise HangError(f"no answer within {seconds} s: a symlink loop or blow-up hangs")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _xattrs(path: str | os.PathLike[str]) -> tuple[tuple[str, bytes], ...]:
    names = os.listxattr(path, follow_symlinks=False)
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))


class Host:
    """What the conftest canary does not see: ctimes, xattrs, inodes, the dirs above."""

    def __init__(self, canary: Canary):
        self.canary = canary
        self.dest = canary.dest
        self.outside = canary.outside
        self.rel = str(canary.outside).lstrip("/")
        self.rearm()

    def sub(self, text: str) -> str:
        """``<OUT>`` → the absolute host dir, ``<OUTREL>`` → the same without the ``/``."""
        return text.replace("<OUTREL>", self.rel).replace("<OUT>", str(self.outside))

    def inroot(self, text: str) -> Path:
        """The path inside DEST a (templated) root-relative path stands for."""
        return self.dest / self.sub(text).lstrip("/")

    def _state(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for dirpath, dirnames, filenames in os.walk(self.outside):
            for name in [".", *dirnames, *filenames]:
                path = os.path.normpath(os.path.join(dirpath, name))
                st = os.lstat(path)
                out[path] = (st.st_ino, st.st_ctime_ns, _xattrs(path))
        base = self.canary.base
        st = os.lstat(base)
        out["<tmp>"] = (st.st_mode, st.st_uid, st.st_gid, _xattrs(base))
        st = os.lstat(base.parent)
        out["<tmp>/.."] = (
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            sorted(os.listdir(base.parent)),
        )
        return out

    def rearm(self) -> None:
        """Take the reference state now (after a test planted something on purpose)."""
        self._before = self._state()
        self._inodes = {
            (st.st_dev, st.st_ino)
            for st in (os.lstat(p) for p in self._before if p.startswith("/"))
            if not stat.S_ISDIR(st.st_mode)
        }

    def shares_host_inode(self) -> list[str]:
        """Names under DEST that are the same inode as a host file (must be none)."""
        found = []
        if not os.path.isdir(self.dest):
            return found
        for _top, dirs, files, dfd in os.fwalk(self.dest):
            for name in [*dirs, *files]:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if (st.st_dev, st.st_ino) in self._inodes:
                    found.append(name)
        return found

    def check(self) -> None:
        """Fail if any host path was touched in a way the canary cannot see."""
        after = self._state()
        changed = sorted(
            k for k in after.keys() | self._before.keys() if after.get(k) != self._before.get(k)
        )
        assert not changed, f"HOST PATH WAS TOUCHED (ctime/xattr/attrs): {changed}"
        for parent in self.dest.parents:
            for marker in MARKERS:
                assert not os.path.lexists(parent / marker), f"ESCAPE: {parent / marker}"
        shared = self.shares_host_inode()
        assert not shared, f"DEST names share a host inode: {shared}"


@pytest.fixture
def host(canary: Canary) -> Iterator[Host]:
    """A ``Host`` guard over ``canary``; checked after the test (before the canary)."""
    guard = Host(canary)
    yield guard
    guard.check()


# -- helpers ----------------------------------------------------------------


def _apply(dest: Path, *layers: Layer, options: ApplyOptions | None = None) -> ApplyResult:
    """Apply ``layers`` as in-memory streams, oldest first, under the deadline."""
    streams = [io.BytesIO(layer.tar()) for layer in layers]
    with deadline():
        return apply_layers(dest, streams, options or ApplyOptions())


def _refused(
    dest: Path,
    *layers: Layer,
    kinds: tuple[type[ExtractorError], ...] = (UnsafeEntryError,),
    options: ApplyOptions | None = None,
) -> ExtractorError:
    """Apply and expect one of ``kinds``; any other exception fails the test as it is."""
    with pytest.raises(ExtractorError) as info:
        _apply(dest, *layers, options=options)
    err = info.value
    assert isinstance(err, kinds), f"wrong error class {type(err).__name__}: {err}"
    assert "\n" not in str(err)
    return err


def _info(
    name: str,
    kind: bytes,
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: float = MTIME,
    linkname: str = "",
    xattrs: dict[str, bytes] | None = None,
) -> tarfile.TarInfo:
    """A hand-made TarInfo (for header fields the builder does not expose)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = mtime
    info.linkname = linkname
    if xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v.decode() for k, v in xattrs.items()}
    return info


def _kind(path: Path) -> str:
    mode = os.lstat(path).st_mode
    for name, test in (
        ("symlink", stat.S_ISLNK),
        ("dir", stat.S_ISDIR),
        ("file", stat.S_ISREG),
        ("fifo", stat.S_ISFIFO),
        ("char", stat.S_ISCHR),
    ):
        if test(mode):
            return name
    return "other"


def _same_inode(a: Path, b: Path) -> bool:
    sa, sb = os.lstat(a), os.lstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _dest_snapshot(dest: Path) -> dict[str, tuple[object, ...]]:
    return snapshot(dest)


# -- 1. entry names -----------------------------------------------------------

# (id, member name, where it must land, relative to DEST)
NAME_CASES = [
    ("dotdot-dotdot", "../../zz-escape", "zz-escape"),
    ("dotdot-outside-victim", "../outside/victim", "outside/victim"),
    ("cve-2026-28406", "../outside.txt", "outside.txt"),
    ("absolute", "/zz-abs/path", "zz-abs/path"),
    ("absolute-host-dir", "<OUT>/victim", "<OUTREL>/victim"),
    ("mid-dotdot", "a/../../../zz-escape", "zz-escape"),
    ("dot-dotdot", "./../zz-escape", "zz-escape"),
    ("abs-dotdot", "/../../zz-escape", "zz-escape"),
    ("many-dotdots", "../" * 64 + "zz-escape", "zz-escape"),
    ("double-slash", "a//b//zz-escape", "a/b/zz-escape"),
    ("leading-double-slash", "//zz-abs//path", "zz-abs/path"),
    ("dotdot-double-slash", "..//..//outside//victim", "outside/victim"),
    ("trailing-dotdot-seg", "zz-escape/x/..", "zz-escape"),
]
ENTRY_KINDS = ["file", "dir", "symlink", "fifo", "hardlink"]


def _entry(layer: Layer, kind: str, name: str) -> Layer:
    if kind == "file":
        return layer.file(name, EVIL, mode=0o600)
    if kind == "dir":
        return layer.dir(name, mode=0o700)
    if kind == "symlink":
        return layer.symlink(name, "somewhere")
    if kind == "fifo":
        return layer.fifo(name)
    return layer.file("t", EVIL).hardlink(name, "t")


@pytest.mark.parametrize("kind", ENTRY_KINDS)
@pytest.mark.parametrize(
    ("name", "where"), [c[1:] for c in NAME_CASES], ids=[c[0] for c in NAME_CASES]
)
def test_hostile_entry_name_is_clamped_into_the_root(
    host: Host, name: str, where: str, kind: str
) -> None:
    """A member name with ``..``, a leading ``/`` or ``//`` lands at its clamped path in DEST."""
    _apply(host.dest, _entry(Layer(), kind, host.sub(name)))
    landed = host.inroot(where)
    assert _kind(landed) == (kind if kind != "hardlink" else "file")
    if kind == "file":
        assert landed.read_bytes() == EVIL
    if kind == "hardlink":
        assert _same_inode(landed, host.dest / "t")


@pytest.mark.parametrize(
    "fmt",
    [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT],
    ids=["pax-path", "gnu-longname", "ustar-prefix"],
)
def test_long_hostile_name_in_every_header_format_is_clamped(host: Host, fmt: int) -> None:
    """A ``../``-climbing name too long for one header (PAX, GNU L, ustar prefix) is clamped."""
    name = "../" * 40 + "zz-escape"
    _apply(host.dest, Layer(fmt).file(name, EVIL))
    assert (host.dest / "zz-escape").read_bytes() == EVIL


def test_gnu_long_hardlink_name_climbing_out_is_refused(host: Host) -> None:
    """A GNU long linkname ``../../…/outside/victim`` never links the host file."""
    layer = Layer(tarfile.GNU_FORMAT).hardlink("x", "../" * 40 + "outside/victim")
    _refused(host.dest, layer, kinds=(BadInputError,))
    assert not os.path.lexists(host.dest / "x")


@pytest.mark.parametrize("options", OPTIONS)
def test_dotdot_dir_entry_sets_the_root_not_its_parent(host: Host, options: ApplyOptions) -> None:
    """A directory entry ``..`` (mode 0700, mtime 1000) changes DEST, never ``<tmp>``."""
    _apply(host.dest, Layer().dir("..", mode=0o700, mtime=1000).file("f", EVIL), options=options)
    st = os.lstat(host.dest)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_mtime_ns == 1000 * 10**9
    assert (host.dest / "f").read_bytes() == EVIL


@pytest.mark.parametrize("name", ["..", "../..", "/..", "a/../.."])
def test_dotdot_file_entry_is_a_refused_root_change(host: Host, name: str) -> None:
    """A regular file named ``..`` (the root, once clamped) is refused, nothing written."""
    _refused(host.dest, Layer().file(name, EVIL).file("after", EVIL))
    assert not os.path.lexists(host.dest / "after")
    assert _kind(host.dest) == "dir"


# -- 2. symlink parents -----------------------------------------------------------

# (id, symlink target for `etc`, where etc/passwd must land)
PARENT_LINKS = [
    ("absolute", "<OUT>", "<OUTREL>/passwd"),
    ("absolute-trailing-slash", "<OUT>/", "<OUTREL>/passwd"),
    ("absolute-dotdot", "/../..<OUT>", "<OUTREL>/passwd"),
    ("absolute-root", "/", "passwd"),
    ("relative-sibling", "../outside", "outside/passwd"),
    ("relative-to-top", "../../../../..", "passwd"),
    ("relative-very-deep", "../" * 1000 + "outside", "outside/passwd"),
    ("relative-dot-mix", "./.././../outside/.", "outside/passwd"),
    ("proc-self-root", "/proc/self/root<OUT>", "proc/self/root/<OUTREL>/passwd"),
    ("proc-self-cwd", "/proc/self/cwd/../outside", "proc/self/outside/passwd"),
    ("host-file", "<OUT>/victim", "<OUTREL>/victim/passwd"),
    ("relative-host-file", "../outside/victim", "outside/victim/passwd"),
]


@pytest.mark.parametrize("split", [True, False], ids=["earlier-layer", "same-layer"])
@pytest.mark.parametrize(
    ("target", "where"), [c[1:] for c in PARENT_LINKS], ids=[c[0] for c in PARENT_LINKS]
)
def test_write_through_symlink_parent_stays_in_root(
    host: Host, target: str, where: str, split: bool
) -> None:
    """``etc -> T`` then ``etc/passwd``: the file lands at T resolved inside DEST."""
    link = Layer().symlink("etc", host.sub(target))
    write = Layer().file("etc/passwd", EVIL, mode=0o600)
    if split:
        _apply(host.dest, link, write)
    else:
        link.members += write.members
        _apply(host.dest, link)
    assert os.readlink(host.dest / "etc") == host.sub(target)
    assert host.inroot(where).read_bytes() == EVIL


@pytest.mark.parametrize("options", OPTIONS)
def test_write_through_absolute_symlink_parent_rootless_and_not(
    host: Host, options: ApplyOptions
) -> None:
    """``etc -> <outside>`` then ``etc/passwd`` and ``etc/dir/file``, privileged and rootless."""
    _apply(
        host.dest,
        Layer().symlink("etc", str(host.outside)),
        Layer()
        .file("etc/passwd", EVIL, uid=4321, gid=4321)
        .dir("etc/dir", mode=0o700)
        .file("etc/dir/file", EVIL)
        .file("etc/victim", EVIL),
        options=options,
    )
    assert host.inroot("<OUTREL>/passwd").read_bytes() == EVIL
    assert host.inroot("<OUTREL>/victim").read_bytes() == EVIL
    assert host.inroot("<OUTREL>/dir/file").read_bytes() == EVIL


@pytest.mark.parametrize("kind", ["file", "dir", "symlink", "fifo", "hardlink"])
def test_every_entry_kind_through_absolute_symlink_parent_stays_in_root(
    host: Host, kind: str
) -> None:
    """Each entry type at ``etc/new`` with ``etc -> <outside>`` is made inside DEST."""
    _apply(host.dest, Layer().symlink("etc", str(host.outside)), _entry(Layer(), kind, "etc/new"))
    landed = host.inroot("<OUTREL>/new")
    assert _kind(landed) == (kind if kind != "hardlink" else "file")
    assert not os.path.lexists(host.outside / "new")


@pytest.mark.parametrize(
    ("links", "where"),
    [
        ([("a", "b"), ("b", "c"), ("c", "<OUT>")], "<OUTREL>/passwd"),
        ([("a", "/b"), ("b", "../c"), ("c", "../../outside")], "outside/passwd"),
        ([("a", "d/b"), ("d/b", "../c"), ("c", "/d/../../..<OUT>/dir")], "<OUTREL>/dir/passwd"),
    ],
    ids=["relative-then-absolute", "absolute-relative-relative", "nested-mixed"],
)
@pytest.mark.parametrize("split", [True, False], ids=["earlier-layer", "same-layer"])
def test_chain_of_symlink_parents_stays_in_root(
    host: Host, links: list[tuple[str, str]], where: str, split: bool
) -> None:
    """A chain ``a -> b -> c -> <outside>`` followed by ``a/passwd`` lands inside DEST."""
    first = Layer()
    for name, target in links:
        first.symlink(name, host.sub(target))
    write = Layer().file("a/passwd", EVIL)
    if split:
        _apply(host.dest, first, write)
    else:
        first.members += write.members
        _apply(host.dest, first)
    assert host.inroot(where).read_bytes() == EVIL


def test_dotdot_after_following_a_link_uses_the_physical_parent(host: Host) -> None:
    """``x -> sub/../../outside`` with ``sub`` a real dir resolves to DEST/outside (clamped)."""
    _apply(
        host.dest,
        Layer().dir("sub").symlink("x", "sub/../../outside"),
        Layer().file("x/victim", EVIL),
    )
    assert (host.dest / "outside" / "victim").read_bytes() == EVIL


def test_dotdot_after_a_symlinked_dir_climbs_its_target_like_a_chroot(host: Host) -> None:
    """``deep -> a/b/c`` and ``x -> deep/../../../../outside``: ``..`` climbs a/b/c, clamps."""
    layer = (
        Layer()
        .dir("a/b/c")
        .symlink("deep", "a/b/c")
        .symlink("x", "deep/../../../../outside")
        .symlink("y", "deep/../sib")
    )
    _apply(host.dest, layer, Layer().file("x/victim", EVIL).file("y/f", EVIL))
    assert (host.dest / "outside" / "victim").read_bytes() == EVIL
    assert (host.dest / "a" / "b" / "sib" / "f").read_bytes() == EVIL


def test_cve_2025_45582_symlink_from_earlier_archive(host: Host) -> None:
    """GNU tar CVE-2025-45582: ``x -> ../../../outside`` then ``x/authorized_keys`` stays in."""
    _apply(
        host.dest, Layer().symlink("x", "../../../outside"), Layer().file("x/authorized_keys", EVIL)
    )
    assert (host.dest / "outside" / "authorized_keys").read_bytes() == EVIL


def test_cve_2025_4517_chain_longer_than_path_max_stays_in_root(host: Host) -> None:
    """The tarfile PATH_MAX chain: 16 levels of 247-char dirs, a link climbing 17 ``..``."""
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    layer = Layer()
    path = ""
    for letter in steps:
        layer.dir(f"{path}{comp}")
        layer.symlink(f"{path}{letter}", comp)
        path = f"{path}{comp}/"
    via = "/".join(steps)
    layer.symlink(f"{via}/{'l' * 254}", "../" * (len(steps) + 1) + "outside")
    layer.file(f"{via}/{'l' * 254}/victim", EVIL)
    layer.symlink("escape", f"{via}/{'l' * 254}/dir")
    layer.file("escape/file", EVIL)
    _apply(host.dest, layer)
    assert (host.dest / "outside" / "victim").read_bytes() == EVIL
    assert (host.dest / "outside" / "dir" / "file").read_bytes() == EVIL


# -- 3. CVE-2025-47290 (stale parent resolution) --------------------------------------


@pytest.mark.parametrize(
    ("target", "where"),
    [("<OUT>", "<OUTREL>"), ("../outside", "outside"), ("/", "")],
    ids=["absolute", "relative", "slash"],
)
@pytest.mark.parametrize("options", OPTIONS)
def test_cve_2025_47290_dir_replaced_by_symlink_in_one_layer(
    host: Host, target: str, where: str, options: ApplyOptions
) -> None:
    """``foo/``, ``foo/tmp/x``, ``foo -> T``, ``foo/tmp/x``, ``foo/victim`` in one layer."""
    layer = (
        Layer()
        .dir("foo")
        .file("foo/tmp/x", b"first\n")
        .symlink("foo", host.sub(target))
        .file("foo/tmp/x", EVIL)
        .file("foo/victim", EVIL)
    )
    _apply(host.dest, layer, options=options)
    assert os.readlink(host.dest / "foo") == host.sub(target)
    base = host.inroot(where) if where else host.dest
    assert (base / "tmp" / "x").read_bytes() == EVIL
    assert (base / "victim").read_bytes() == EVIL


@pytest.mark.parametrize("target", ["<OUT>", "../outside"], ids=["absolute", "relative"])
def test_cve_2025_47290_dir_replaced_by_symlink_across_layers(host: Host, target: str) -> None:
    """Layer 1 ``foo/tmp/x``; layer 2 ``foo -> T``, ``foo/tmp/x``, ``foo/victim``: in root."""
    _apply(
        host.dest,
        Layer().dir("foo").file("foo/tmp/x", b"first\n"),
        Layer().symlink("foo", host.sub(target)).file("foo/tmp/x", EVIL).file("foo/victim", EVIL),
    )
    where = host.inroot("<OUTREL>") if target == "<OUT>" else host.dest / "outside"
    assert (where / "tmp" / "x").read_bytes() == EVIL
    assert (where / "victim").read_bytes() == EVIL


@pytest.mark.parametrize("between", [1, 300], ids=["one-dir-between", "more-than-cached"])
@pytest.mark.parametrize("options", OPTIONS)
def test_cve_2025_47290_with_other_parents_cached_in_between(
    host: Host, between: int, options: ApplyOptions
) -> None:
    """The engine keeps many parent directories open: ``foo/tmp`` is resolved, other
    directories are written, ``foo`` becomes a symlink out, and ``foo/tmp/x`` is written
    again: no cached resolution of ``foo/tmp`` survives the replacement."""
    layer = Layer().dir("foo").file("foo/tmp/x", b"first\n")
    for i in range(between):
        layer.file(f"other{i}/f", b"o")
    layer.file("foo/tmp/y", b"cached again\n")
    for i in range(between):
        layer.file(f"other{i}/g", b"o")
    layer.symlink("foo", host.sub("<OUT>")).file("foo/tmp/x", EVIL).file("foo/tmp/y", EVIL)
    _apply(host.dest, layer, options=options)
    where = host.inroot("<OUTREL>")
    assert (where / "tmp" / "x").read_bytes() == EVIL
    assert (where / "tmp" / "y").read_bytes() == EVIL


def test_cve_2025_47290_with_whiteout_then_symlink(host: Host) -> None:
    """Layer 2 whites out ``foo`` then makes ``foo -> <outside>`` and writes ``foo/victim``."""
    _apply(
        host.dest,
        Layer().dir("foo").file("foo/victim", b"first\n"),
        Layer()
        .file("foo/other", b"cached\n")
        .whiteout("foo")
        .symlink("foo", str(host.outside))
        .file("foo/victim", EVIL),
    )
    assert host.inroot("<OUTREL>/victim").read_bytes() == EVIL


def test_cve_2025_47290_with_dir_replaced_by_hardlinked_symlink(host: Host) -> None:
    """``foo/x`` cached, then ``foo`` becomes a hardlink of ``s -> <outside>``; ``foo/victim``."""
    layer = (
        Layer()
        .dir("foo")
        .file("foo/x", b"first\n")
        .symlink("s", str(host.outside))
        .file("foo/y", b"cache me\n")
        .hardlink("foo", "s")
        .file("foo/victim", EVIL)
    )
    _apply(host.dest, layer)
    assert _same_inode(host.dest / "foo", host.dest / "s")
    assert host.inroot("<OUTREL>/victim").read_bytes() == EVIL


def test_cve_2025_47290_with_parent_dir_replaced_by_file_then_symlink(host: Host) -> None:
    """``a/b/x`` cached; ``a`` becomes a file, then ``a -> <outside>``; ``a/b/x`` stays in root."""
    layer = (
        Layer()
        .file("a/b/x", b"first\n")
        .file("a", b"plain\n")
        .symlink("a", str(host.outside))
        .file("a/b/x", EVIL)
    )
    _apply(host.dest, layer)
    assert host.inroot("<OUTREL>/b/x").read_bytes() == EVIL


@pytest.mark.parametrize("lower", ["dir", "symlink"])
@pytest.mark.parametrize("options", OPTIONS)
def test_cve_2025_47290_parent_resolved_through_its_own_child(
    host: Host, lower: str, options: ApplyOptions
) -> None:
    """``a -> r/n/..`` resolves through ``r/n``; an ``a/n -> <outside>`` entry re-routes ``a``.

    The entry ``a/n`` has the same parent as the entries around it, so only
    dropping the cached resolution when ``r/n`` is removed sends ``a/victim``
    to ``<outside>/..`` inside DEST instead of the stale ``r``.
    """
    layer = Layer().dir("r")
    if lower == "dir":
        layer.dir("r/n")
    else:
        layer.dir("r/d2").symlink("r/n", "d2")
    layer.symlink("a", "r/n/..").file("a/x", b"cached\n")
    layer.symlink("a/n", str(host.outside)).file("a/victim", EVIL)
    _apply(host.dest, layer, options=options)
    assert os.readlink(host.dest / "r" / "n") == str(host.outside)
    assert (host.dest / "r" / "x").read_bytes() == b"cached\n"
    assert host.inroot(f"{host.canary.base}/victim").read_bytes() == EVIL
    assert not os.path.lexists(host.dest / "r" / "victim")


# -- 4. CVE-2021-29136 (the root entry) ------------------------------------------------

ROOT_NAMES = [".", "./", "/", "./.", "..", "../.."]


@pytest.mark.parametrize("name", ROOT_NAMES)
@pytest.mark.parametrize("target", ["<OUT>", "../outside"], ids=["absolute", "relative"])
def test_cve_2021_29136_root_entry_as_symlink_is_refused(
    host: Host, name: str, target: str
) -> None:
    """A root entry that is a symlink to the host is refused before any later entry."""
    layer = (
        Layer()
        .symlink(name, host.sub(target))
        .file("passwd", EVIL)
        .file("victim", EVIL)
        .dir("dir", mode=0o700)
    )
    _refused(host.dest, layer)
    assert _kind(host.dest) == "dir"
    assert os.listdir(host.dest) == []


@pytest.mark.parametrize("options", OPTIONS)
def test_cve_2021_29136_root_symlink_in_a_later_layer_is_refused(
    host: Host, options: ApplyOptions
) -> None:
    """Layer 2 turns ``.`` into ``-> <outside>`` and writes ``passwd``: refused, layer 1 kept."""
    before = Layer().file("keep", b"lower\n")
    _refused(
        host.dest,
        before,
        Layer().symlink(".", str(host.outside)).file("passwd", EVIL),
        options=options,
    )
    assert (host.dest / "keep").read_bytes() == b"lower\n"
    assert not os.path.lexists(host.dest / "passwd")


@pytest.mark.parametrize("kind", ["file", "fifo", "hardlink"])
def test_root_entry_of_another_type_is_refused(host: Host, kind: str) -> None:
    """``.`` as a file, FIFO or hardlink (to ``victim``) is refused as unsafe or bad input."""
    layer = Layer().file("victim", b"in root\n")
    if kind == "file":
        layer.file(".", EVIL)
    elif kind == "fifo":
        layer.fifo(".")
    else:
        layer.hardlink(".", "victim")
    layer.file("after", EVIL)
    _refused(host.dest, layer, kinds=(UnsafeEntryError, BadInputError))
    assert _kind(host.dest) == "dir"
    assert not os.path.lexists(host.dest / "after")


# -- 5. CVE-2021-32760 (hardlink to a symlink, with mode bits) ----------------------


@pytest.mark.parametrize("split", [False, True], ids=["same-layer", "split-layers"])
@pytest.mark.parametrize(
    "target", ["<OUT>/victim", "../outside/victim"], ids=["absolute", "relative"]
)
@pytest.mark.parametrize("options", OPTIONS)
def test_cve_2021_32760_hardlink_to_symlink_never_chmods_the_host(
    host: Host, target: str, split: bool, options: ApplyOptions
) -> None:
    """``E -> victim``, hardlink ``L -> E`` with mode 04777/uid/mtime/xattr: host unchanged."""
    first = Layer().symlink("E", host.sub(target))
    second = Layer().add(
        _info(
            "L",
            tarfile.LNKTYPE,
            mode=0o4777,
            uid=4321,
            gid=4321,
            mtime=12345,
            linkname="E",
            xattrs={"user.evil": b"1"},
        )
    )
    if split:
        _apply(host.dest, first, second, options=options)
    else:
        first.members += second.members
        _apply(host.dest, first, options=options)
    assert _kind(host.dest / "L") == "symlink"
    assert _same_inode(host.dest / "L", host.dest / "E")
    assert os.readlink(host.dest / "L") == host.sub(target)


# -- 6. hardlink targets ----------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "linkname"),
    [
        ([], "../outside/victim"),
        ([], "<OUT>/victim"),
        ([], "/../outside/dir/file"),
        ([("d", "<OUT>")], "d/victim"),
        ([("d", "../outside")], "d/victim"),
        ([("d", "<OUT>/dir")], "d/file"),
        ([("d", "sub/../../outside")], "d/victim"),
        ([("d", "/proc/self/root<OUT>")], "d/victim"),
        ([], ".."),
        ([], "/"),
    ],
    ids=[
        "dotdot",
        "absolute",
        "absolute-dotdot",
        "abs-symlinked-dir",
        "rel-symlinked-dir",
        "abs-symlinked-subdir",
        "dotdot-after-link",
        "proc-self-root",
        "the-root",
        "slash",
    ],
)
def test_hardlink_to_host_file_is_missing_in_root(
    host: Host, setup: list[tuple[str, str]], linkname: str
) -> None:
    """A hardlink naming a host file resolves inside DEST, finds nothing: a bad-input error."""
    lower = Layer()
    for name, target in setup:
        lower.symlink(name, host.sub(target))
    err = _refused(
        host.dest, lower, Layer().hardlink("x", host.sub(linkname)), kinds=(BadInputError,)
    )
    assert err.entry is not None
    assert not os.path.lexists(host.dest / "x")


@pytest.mark.parametrize(
    ("setup", "linkname", "real"),
    [
        ([], "../outside/victim", "outside/victim"),
        ([], "<OUT>/victim", "<OUTREL>/victim"),
        ([("d", "<OUT>")], "d/victim", "<OUTREL>/victim"),
        ([("d", "../outside")], "d/victim", "outside/victim"),
    ],
    ids=["dotdot", "absolute", "abs-symlinked-dir", "rel-symlinked-dir"],
)
def test_hardlink_to_host_path_links_the_in_root_file(
    host: Host, setup: list[tuple[str, str]], linkname: str, real: str
) -> None:
    """When DEST holds a file at the resolved path, the hardlink shares that in-root inode."""
    lower = Layer().file(host.sub(real), b"in root\n")
    for name, target in setup:
        lower.symlink(name, host.sub(target))
    _apply(host.dest, lower, Layer().hardlink("x", host.sub(linkname)))
    assert _same_inode(host.dest / "x", host.inroot(real))
    assert (host.dest / "x").read_bytes() == b"in root\n"


def test_hardlink_name_under_symlinked_dir_is_made_in_root(host: Host) -> None:
    """``d -> <outside>``, file ``t``, hardlink ``d/h -> t``: the link is DEST/<outside>/h."""
    _apply(
        host.dest,
        Layer().symlink("d", str(host.outside)),
        Layer().file("t", EVIL).hardlink("d/h", "t"),
    )
    assert _same_inode(host.inroot("<OUTREL>/h"), host.dest / "t")


def test_hardlink_to_symlink_to_host_dir_then_write_below_it(host: Host) -> None:
    """``s -> <outside>/dir``, hardlink ``h -> s``, then ``h/file``: written inside DEST."""
    _apply(
        host.dest,
        Layer().symlink("s", f"{host.outside}/dir").hardlink("h", "s").file("h/file", EVIL),
    )
    assert _kind(host.dest / "h") == "symlink"
    assert host.inroot("<OUTREL>/dir/file").read_bytes() == EVIL


def test_hardlink_listed_before_its_symlink_target_links_the_link(host: Host) -> None:
    """``h -> t`` before ``t -> <outside>/victim`` (same layer): ``h`` ends as the link's inode."""
    layer = (
        Layer()
        .add(_info("h", tarfile.LNKTYPE, mode=0o4777, uid=4321, mtime=5, linkname="t"))
        .symlink("t", f"{host.outside}/victim")
    )
    _apply(host.dest, layer)
    assert _kind(host.dest / "h") == "symlink"
    assert _same_inode(host.dest / "h", host.dest / "t")


def test_whiteout_under_hardlinked_symlink_stays_in_root(host: Host) -> None:
    """``s -> <outside>``, hardlink ``h -> s``, then ``h/.wh.victim``: only DEST's copy goes."""
    lower = Layer().file(f"{host.rel}/victim", b"v\n").symlink("s", str(host.outside))
    _apply(host.dest, lower.hardlink("h", "s"), Layer().file("h/.wh.victim").opaque("h/dir"))
    assert not os.path.lexists(host.inroot("<OUTREL>/victim"))


@pytest.mark.parametrize(
    "target", ["<OUT>", "../outside", "<OUT>/dir"], ids=["absolute", "relative", "host-subdir"]
)
def test_aufs_link_store_that_is_a_symlink_to_the_host(host: Host, target: str) -> None:
    """A pre-existing DEST ``.wh..wh.plnk -> T``: plnk content and its links stay in DEST."""
    host.dest.mkdir()
    os.symlink(host.sub(target), host.dest / ".wh..wh.plnk")
    layer = Layer().file(".wh..wh.plnk/victim", EVIL).hardlink("x", ".wh..wh.plnk/victim")
    _apply(host.dest, layer)
    assert (host.dest / "x").read_bytes() == EVIL
    assert not os.path.lexists(host.dest / ".wh..wh.plnk")


def test_preexisting_hardlink_to_host_file_is_never_written_into(canary: Canary) -> None:
    """DEST/etc/passwd already hardlinked to a host file: a layer's ``etc/passwd`` unlinks it."""
    host_passwd = canary.outside / "passwd"
    (canary.dest / "etc").mkdir(parents=True)
    os.link(host_passwd, canary.dest / "etc" / "passwd")
    assert os.lstat(host_passwd).st_nlink == 2
    _apply(canary.dest, Layer().file("etc/passwd", EVIL, mode=0o600, uid=4321, mtime=1000))
    assert (canary.dest / "etc" / "passwd").read_bytes() == EVIL
    assert host_passwd.read_text() == "host passwd\n"
    assert os.lstat(host_passwd).st_nlink == 1  # the canary checks mode, owner, mtime


@pytest.mark.parametrize("kind", ["dir", "symlink", "fifo", "hardlink", "whiteout"])
def test_preexisting_hardlink_to_host_file_replaced_by_other_kinds(
    canary: Canary, kind: str
) -> None:
    """A pre-existing DEST hardlink to a host file replaced by any entry: host inode untouched."""
    host_victim = canary.outside / "victim"
    canary.dest.mkdir()
    os.link(host_victim, canary.dest / "v")
    layer = Layer().file("t", EVIL)
    if kind == "whiteout":
        layer.whiteout("v")
    elif kind == "hardlink":
        layer.add(_info("v", tarfile.LNKTYPE, mode=0o4777, uid=4321, mtime=5, linkname="t"))
    else:
        _entry(layer, kind, "v")
    _apply(canary.dest, layer)
    assert os.lstat(host_victim).st_nlink == 1
    if kind == "whiteout":
        assert not os.path.lexists(canary.dest / "v")
    else:
        assert _kind(canary.dest / "v") == (kind if kind != "hardlink" else "file")


# -- 7. whiteouts and opaque markers ------------------------------------------------------


@pytest.mark.parametrize(
    "marker",
    [
        "d/.wh.victim",
        "d/.wh.dir",
        "d/.wh.passwd",
        "d/.wh..wh..opq",
        "d/dir/.wh.file",
        "d/dir/.wh..wh..opq",
    ],
)
@pytest.mark.parametrize("options", OPTIONS)
def test_whiteout_under_absolute_symlink_touches_no_host_file(
    host: Host, marker: str, options: ApplyOptions
) -> None:
    """``d -> <outside>`` then a whiteout or opaque marker under ``d``: the host keeps all."""
    _apply(
        host.dest, Layer().symlink("d", str(host.outside)), Layer().file(marker), options=options
    )
    assert os.readlink(host.dest / "d") == str(host.outside)


@pytest.mark.parametrize(
    ("marker", "gone", "kept"),
    [
        ("d/.wh.victim", ["victim"], ["passwd", "dir/file"]),
        ("d/.wh.dir", ["dir"], ["passwd", "victim"]),
        ("d/dir/.wh.file", ["dir/file"], ["passwd", "victim"]),
        ("d/.wh..wh..opq", ["passwd", "victim", "dir"], []),
    ],
    ids=["file", "dir", "nested", "opaque"],
)
@pytest.mark.parametrize(
    "target", ["<OUT>", "../outside", "/../../outside"], ids=["absolute", "relative", "abs-dotdot"]
)
def test_whiteout_under_symlink_removes_the_in_root_copy(
    host: Host, target: str, marker: str, gone: list[str], kept: list[str]
) -> None:
    """``d -> T`` with an in-root copy of the host files: the whiteout hits that copy only."""
    real = "<OUTREL>" if target == "<OUT>" else "outside"
    lower = (
        Layer()
        .file(f"{host.sub(real)}/passwd", b"p\n")
        .file(f"{host.sub(real)}/victim", b"v\n")
        .file(f"{host.sub(real)}/dir/file", b"f\n")
        .symlink("d", host.sub(target))
    )
    _apply(host.dest, lower, Layer().file(marker))
    base = host.inroot(real)
    for name in gone:
        assert not os.path.lexists(base / name), name
    for name in kept:
        assert os.path.lexists(base / name), name
    assert _kind(host.dest / "d") == "symlink"


@pytest.mark.parametrize(
    ("marker", "removed"),
    [
        ("../.wh.outside", "outside"),
        ("../../.wh.outside", "outside"),
        ("/../.wh.outside", "outside"),
        ("a/../../.wh.outside", "outside"),
        ("../.wh.rootfs", "rootfs"),
    ],
)
def test_whiteout_with_dotdot_name_is_clamped(host: Host, marker: str, removed: str) -> None:
    """``../.wh.outside`` hides DEST/outside only; ``../.wh.rootfs`` never removes DEST itself."""
    lower = Layer().file("outside/victim", b"v\n").file("rootfs/x", b"r\n").file("keep", b"k\n")
    _apply(host.dest, lower, Layer().file(marker))
    assert not os.path.lexists(host.dest / removed)
    assert (host.dest / "keep").read_bytes() == b"k\n"


@pytest.mark.parametrize("marker", ["../.wh..wh..opq", "/.wh..wh..opq", "a/../../.wh..wh..opq"])
def test_opaque_marker_with_dotdot_clears_only_the_root(host: Host, marker: str) -> None:
    """``../.wh..wh..opq`` is the root's own opaque marker: lower DEST content goes, host stays."""
    _apply(
        host.dest,
        Layer().file("lower", b"l\n").symlink("l", str(host.outside)),
        Layer().file("upper", b"u\n").file(marker),
    )
    assert sorted(os.listdir(host.dest)) == ["upper"]


def test_whiteout_of_symlink_to_host_removes_only_the_link(host: Host) -> None:
    """``.wh.v`` and ``.wh.w`` for ``v -> <outside>`` and ``w -> <outside>/victim``: links go."""
    _apply(
        host.dest,
        Layer()
        .symlink("v", str(host.outside))
        .symlink("w", f"{host.outside}/victim")
        .symlink("r", "../outside"),
        Layer().whiteout("v").whiteout("w").whiteout("r"),
    )
    assert os.listdir(host.dest) == []


@pytest.mark.parametrize("how", ["whiteout", "opaque", "file-over-dir", "symlink-over-dir"])
def test_removing_a_dir_never_follows_links_inside_it(host: Host, how: str) -> None:
    """A lower ``d/`` full of links to the host, then ``d`` removed/cleared: only links go."""
    lower = (
        Layer()
        .symlink("d/l", str(host.outside))
        .symlink("d/m", "../../outside/dir")
        .symlink("d/sub/n", f"{host.outside}/victim")
        .symlink("d/sub/o", "../../../outside/dir/")
        .hardlink("d/p", "d/sub/n")
    )
    upper = {
        "whiteout": Layer().whiteout("d"),
        "opaque": Layer().opaque("d"),
        "file-over-dir": Layer().file("d", EVIL),
        "symlink-over-dir": Layer().symlink("d", "elsewhere"),
    }[how]
    _apply(host.dest, lower, upper)
    if how == "opaque":
        assert os.listdir(host.dest / "d") == []
    elif how == "whiteout":
        assert not os.path.lexists(host.dest / "d")
    else:
        assert _kind(host.dest / "d") == ("file" if how == "file-over-dir" else "symlink")


@pytest.mark.parametrize(
    "where",
    ["", "d/", "l/", "d/../", "../", "<OUT>/"],
    ids=["root", "dir", "symlink-dir", "dotdot-in-dir", "dotdot", "abs-host"],
)
@pytest.mark.parametrize("bad", [".wh.", ".wh..", ".wh..."])
@pytest.mark.parametrize("options", OPTIONS)
def test_malformed_whiteout_is_refused_and_deletes_nothing(
    host: Host, where: str, bad: str, options: ApplyOptions
) -> None:
    """``.wh.``, ``.wh..``, ``.wh...`` (at the root, in a dir, under a link) delete nothing."""
    lower = (
        Layer()
        .file("keep", b"k\n")
        .file("d/keep", b"dk\n")
        .symlink("l", str(host.outside))
        .file(f"{host.rel}/keep", b"ok\n")
    )
    _apply(host.dest, lower)
    before = _dest_snapshot(host.dest)
    err = _refused(host.dest, Layer().file(host.sub(where) + bad), options=options)
    assert err.entry is not None
    assert _dest_snapshot(host.dest) == before


def test_whiteout_name_used_as_a_directory_is_refused(host: Host) -> None:
    """``.wh..wh..opq/x`` and ``d/.wh.x/y`` under a link to the host are refused cleanly."""
    _apply(host.dest, Layer().symlink("d", str(host.outside)))
    _refused(
        host.dest, Layer().file("d/.wh.victim/x", EVIL), kinds=(BadInputError, UnsafeEntryError)
    )


# -- 8. an entry over an existing symlink to a host file --------------------------------

OVER_KINDS = ["file", "dir", "fifo", "hardlink", "symlink", "char"]
OVER_TARGETS = [
    ("<OUT>/victim", "absolute"),
    ("../outside/victim", "relative"),
    ("<OUT>/new-file", "dangling-host"),
    ("../outside/dir", "host-dir"),
    ("/proc/self/root<OUT>/victim", "proc-self-root"),
]


def _over(layer: Layer, kind: str) -> Layer:
    """The upper entry ``f`` of ``kind``, with hostile metadata that must land on DEST/f."""
    meta: dict[str, Any] = {"uid": 4321, "gid": 4321, "mtime": 1234}
    if kind == "file":
        return layer.file("f", EVIL, mode=0o4777, xattrs={"user.evil": b"1"}, **meta)
    if kind == "dir":
        return layer.dir("f", mode=0o777, xattrs={"user.evil": b"1"}, **meta)
    if kind == "fifo":
        return layer.fifo("f", mode=0o777, **meta)
    if kind == "char":
        return layer.device("f", "char", 1, 3, mode=0o777, **meta)
    if kind == "symlink":
        return layer.symlink("f", "in-root-target", **meta)
    layer.file("t", b"in root\n")
    return layer.add(_info("f", tarfile.LNKTYPE, mode=0o4777, linkname="t", **meta))


@pytest.mark.parametrize("split", [True, False], ids=["earlier-layer", "same-layer"])
@pytest.mark.parametrize("target", [t[0] for t in OVER_TARGETS], ids=[t[1] for t in OVER_TARGETS])
@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=ROOT_ONLY) if k == "char" else k for k in OVER_KINDS]
)
def test_entry_over_symlink_to_host_replaces_the_link(
    host: Host, kind: str, target: str, split: bool
) -> None:
    """Lower ``f -> host file``, upper ``f`` of any type: DEST/f is replaced, the host is not."""
    lower = Layer().symlink("f", host.sub(target))
    upper = _over(Layer(), kind)
    if split:
        _apply(host.dest, lower, upper)
    else:
        lower.members += upper.members
        _apply(host.dest, lower)
    f = host.dest / "f"
    assert _kind(f) == (kind if kind != "hardlink" else "file")
    if kind == "file":
        assert f.read_bytes() == EVIL
        assert stat.S_IMODE(os.lstat(f).st_mode) == 0o4777
    if kind == "hardlink":
        assert _same_inode(f, host.dest / "t")
    if kind == "symlink":
        assert os.readlink(f) == "in-root-target"
    if kind != "hardlink":
        assert os.lstat(f).st_mtime_ns == 1234 * 10**9


@pytest.mark.parametrize("options", OPTIONS)
def test_symlink_entry_metadata_stays_on_the_link(host: Host, options: ApplyOptions) -> None:
    """A symlink ``s -> <outside>/victim`` with owner, mtime and xattrs: only the link changes."""
    layer = Layer().add(
        _info(
            "s",
            tarfile.SYMTYPE,
            mode=0o777,
            uid=4321,
            gid=4321,
            mtime=1234,
            linkname=f"{host.outside}/victim",
            xattrs={"user.evil": b"1", "trusted.evil": b"1"},
        )
    )
    layer.add(
        _info(
            "r",
            tarfile.SYMTYPE,
            mode=0o777,
            uid=4321,
            mtime=1234,
            linkname="../outside/dir",
            xattrs={"trusted.evil": b"1"},
        )
    )
    result = _apply(host.dest, layer, options=options)
    assert os.lstat(host.dest / "s").st_mtime_ns == 1234 * 10**9
    if not result.rootless:
        assert os.lstat(host.dest / "s").st_uid == 4321


# -- 9. a directory entry over a symlink to a host directory -----------------------------


@pytest.mark.parametrize(
    "target",
    ["<OUT>/dir", "../outside/dir", "/../outside/dir"],
    ids=["absolute", "relative", "abs-dotdot"],
)
@pytest.mark.parametrize("options", OPTIONS)
def test_dir_over_symlink_to_host_dir_replaces_the_link(
    host: Host, target: str, options: ApplyOptions
) -> None:
    """Lower ``d -> host dir``; upper dir ``d`` (0700, owner, xattr) and ``d/new``: all in DEST."""
    _apply(
        host.dest,
        Layer().symlink("d", host.sub(target)),
        Layer()
        .dir(
            "d",
            mode=0o700,
            uid=4321,
            gid=4321,
            mtime=1000,
            xattrs={"user.evil": b"1", "trusted.evil": b"1"},
        )
        .file("d/new", EVIL)
        .dir("d/sub", mode=0o555),
        options=options,
    )
    d = host.dest / "d"
    assert _kind(d) == "dir"
    assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700
    assert os.getxattr(d, "user.evil", follow_symlinks=False) == b"1"
    assert (d / "new").read_bytes() == EVIL
    assert os.lstat(d).st_mtime_ns == 1000 * 10**9


@pytest.mark.parametrize(
    ("target", "real"),
    [
        ("<OUT>/dir", "<OUTREL>/dir"),
        ("../outside/dir", "outside/dir"),
        ("/proc/self/root<OUT>/dir", "proc/self/root/<OUTREL>/dir"),
    ],
    ids=["absolute", "relative", "proc-self-root"],
)
@pytest.mark.parametrize("options", OPTIONS)
def test_keep_dirlinks_keeps_the_link_but_writes_resolve_in_root(
    host: Host, target: str, real: str, options: ApplyOptions
) -> None:
    """``--keep-dirlinks``: ``d -> T`` (a dir inside DEST) is kept; ``d/new`` lands in DEST."""
    keep = ApplyOptions(rootless=options.rootless, keep_dirlinks=True)
    _apply(
        host.dest,
        Layer().dir(host.sub(real), mode=0o755).symlink("d", host.sub(target)),
        Layer()
        .dir("d", mode=0o700, uid=4321, mtime=1000, xattrs={"user.evil": b"1"})
        .file("d/new", EVIL)
        .dir("d/sub", mode=0o700, mtime=1000),
        options=keep,
    )
    assert os.readlink(host.dest / "d") == host.sub(target)
    assert host.inroot(f"{real}/new").read_bytes() == EVIL
    assert stat.S_IMODE(os.lstat(host.inroot(f"{real}/sub")).st_mode) == 0o700
    assert not os.path.lexists(host.outside / "dir" / "new")


@pytest.mark.parametrize("target", ["<OUT>/dir", "../outside/dir"], ids=["absolute", "relative"])
def test_keep_dirlinks_replaces_a_link_that_resolves_to_nothing_in_root(
    host: Host, target: str
) -> None:
    """``--keep-dirlinks`` with ``d -> host dir`` missing inside DEST: ``d`` becomes a real dir."""
    _apply(
        host.dest,
        Layer().symlink("d", host.sub(target)),
        Layer().dir("d", mode=0o700).file("d/new", EVIL),
        options=ApplyOptions(keep_dirlinks=True),
    )
    assert _kind(host.dest / "d") == "dir"
    assert (host.dest / "d" / "new").read_bytes() == EVIL


# -- 10. symlink loops and blow-ups ------------------------------------------------------


def _chain(n: int) -> Layer:
    layer = Layer().dir("end")
    for i in range(n):
        layer.symlink(f"c{i}", f"c{i + 1}" if i + 1 < n else "end")
    return layer


def _bomb() -> Layer:
    layer = Layer().symlink("b0", ".")
    for i in range(1, 10):
        layer.symlink(f"b{i}", "/".join([f"b{i - 1}"] * 8))
    return layer


LOOPS = [
    ("two-link-loop", Layer().symlink("a", "b").symlink("b", "a"), "a/x"),
    ("self-loop", Layer().symlink("l", "l"), "l/x"),
    ("absolute-loop", Layer().symlink("a", "/b").symlink("b", "/a"), "a/x"),
    ("dotdot-loop", Layer().dir("d").symlink("d/l", "../d/l"), "d/l/x"),
    ("dot-loop", Layer().symlink("l", "./l/"), "l/x"),
    ("chain-of-100", _chain(100), "c0/x"),
    ("exponential-bomb", _bomb(), "b9/x"),
]


@pytest.mark.parametrize(
    "action", ["file", "dir", "symlink", "hardlink-name", "hardlink-target", "whiteout", "opaque"]
)
@pytest.mark.parametrize(("links", "path"), [c[1:] for c in LOOPS], ids=[c[0] for c in LOOPS])
@pytest.mark.parametrize("split", [True, False], ids=["earlier-layer", "same-layer"])
def test_symlink_loop_is_a_clean_error(
    host: Host, links: Layer, path: str, action: str, split: bool
) -> None:
    """A loop or too-long chain in a parent fails fast with a named unsafe/bad-input error."""
    lower = Layer()
    for info, data in links.members:
        info = copy.copy(info)
        info.linkname = host.sub(info.linkname)
        lower.add(info, data)
    upper = Layer().file("real", b"r\n")
    name = path
    if action == "file":
        upper.file(path, EVIL)
    elif action == "dir":
        upper.dir(path)
    elif action == "symlink":
        upper.symlink(path, str(host.outside))
    elif action == "hardlink-name":
        upper.hardlink(path, "real")
    elif action == "hardlink-target":
        name = "h"
        upper.hardlink("h", path)
    elif action == "whiteout":
        head, _, base = path.rpartition("/")
        name = f"{head}/.wh.{base}"
        upper.whiteout(path)
    else:
        head = path.rpartition("/")[0]
        name = f"{head}/.wh..wh..opq"
        upper.opaque(head)
    if split:
        err = _refused(host.dest, lower, upper, kinds=(UnsafeEntryError, BadInputError))
    else:
        lower.members += upper.members
        err = _refused(host.dest, lower, kinds=(UnsafeEntryError, BadInputError))
    assert err.entry is not None
    assert err.entry.rstrip("/") == name


def test_link_that_loops_only_on_the_host_resolves_in_root(host: Host) -> None:
    """``a -> <outside>/../rootfs/a`` is DEST/a on the host but a plain path inside DEST."""
    _apply(
        host.dest, Layer().symlink("a", f"{host.outside}/../rootfs/a"), Layer().file("a/x", EVIL)
    )
    assert host.inroot(f"{host.canary.base}/rootfs/a/x").read_bytes() == EVIL


@pytest.mark.parametrize("kind", ["file", "dir", "symlink", "fifo"])
def test_entry_replacing_a_looping_symlink_is_fine(host: Host, kind: str) -> None:
    """An entry at the path of a self-loop ``l -> l`` replaces the link (never followed)."""
    _apply(
        host.dest,
        Layer().symlink("l", "l").symlink("m", "n").symlink("n", "m"),
        _entry(Layer(), kind, "l"),
        options=ApplyOptions(keep_dirlinks=True),
    )
    assert _kind(host.dest / "l") == kind


# -- 11. deep paths -------------------------------------------------------------------


def _open_deep(top: Path, parts: list[str]) -> int:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for part in parts:
        nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        os.close(fd)
        fd = nxt
    return fd


@pytest.mark.parametrize("width", [1, 20], ids=["short-components", "longer-than-path-max"])
def test_deep_path_is_written_inside(host: Host, width: int) -> None:
    """300 nested components (up to 6300 characters, past PATH_MAX) are made inside DEST."""
    parts = [f"{i:0{width}d}"[-width:] if width > 1 else "d" for i in range(300)]
    layer = Layer().file("/".join([*parts, "leaf"]), EVIL)
    _apply(host.dest, layer)
    fd = _open_deep(host.dest, parts)
    try:
        assert os.stat("leaf", dir_fd=fd, follow_symlinks=False).st_size == len(EVIL)
    finally:
        os.close(fd)


@pytest.mark.parametrize("depth", [300, 600])
@pytest.mark.parametrize("how", ["whiteout", "opaque", "file-over-dir", "symlink-over-dir"])
def test_deep_lower_tree_is_removed_cleanly(host: Host, depth: int, how: str) -> None:
    """A lower tree 300 or 600 directories deep (a host link at the bottom) is removed whole."""
    deep = "d/" * depth
    lower = Layer().file(f"{deep}leaf", b"x").symlink(f"{deep}host", str(host.outside))
    upper = {
        "whiteout": Layer().whiteout("d"),
        "opaque": Layer().opaque(""),
        "file-over-dir": Layer().file("d", EVIL),
        "symlink-over-dir": Layer().symlink("d", str(host.outside)),
    }[how]
    _apply(host.dest, lower, upper)
    if how in ("whiteout", "opaque"):
        assert os.listdir(host.dest) == []
    else:
        assert _kind(host.dest / "d") == ("file" if how == "file-over-dir" else "symlink")


def test_deep_dotdot_name_is_clamped(host: Host) -> None:
    """``d/`` 300 times, ``../`` 400 times, then ``zz-escape``: the root's ``zz-escape``."""
    _apply(host.dest, Layer().file("d/" * 300 + "../" * 400 + "zz-escape", EVIL))
    assert (host.dest / "zz-escape").read_bytes() == EVIL


def test_deep_symlink_climbing_past_the_root_is_clamped(host: Host) -> None:
    """A link 300 dirs down to ``../`` (400 times) ``outside``: writes land in DEST/outside."""
    deep = "d/" * 300
    _apply(
        host.dest,
        Layer().symlink(f"{deep}l", "../" * 400 + "outside"),
        Layer().file(f"{deep}l/victim", EVIL).file(f"{deep}l/dir/file", EVIL),
    )
    assert (host.dest / "outside" / "victim").read_bytes() == EVIL
    assert (host.dest / "outside" / "dir" / "file").read_bytes() == EVIL


# -- 12. directory modes and times set at the end --------------------------------------


FINISH_CASES = [
    (
        "dir-then-link-same-layer",
        [Layer().dir("d", mode=0o555, mtime=1000).symlink("d", "<OUT>/dir")],
        "d",
    ),
    (
        "dir-then-link-next-layer",
        [Layer().dir("d", mode=0o555, mtime=1000), Layer().symlink("d", "<OUT>/dir")],
        "d",
    ),
    (
        "subdir-then-parent-link",
        [Layer().dir("d").dir("d/dir", mode=0o700, mtime=1000).symlink("d", "<OUT>")],
        "d",
    ),
    (
        "relative-link",
        [Layer().dir("d").dir("d/dir", mode=0o700, mtime=1000), Layer().symlink("d", "../outside")],
        "d",
    ),
    (
        "whiteout-then-link",
        [Layer().dir("d", mode=0o700, mtime=1000), Layer().whiteout("d").symlink("d", "<OUT>/dir")],
        "d",
    ),
    (
        "opaque-then-link",
        [
            Layer().dir("p/d", mode=0o700, mtime=1000),
            Layer().opaque("p").symlink("p/d", "<OUT>/dir"),
        ],
        "p/d",
    ),
    (
        "hardlink-over-dir",
        [Layer().dir("d", mode=0o700, mtime=1000).symlink("s", "<OUT>/dir").hardlink("d", "s")],
        "d",
    ),
]


@pytest.mark.parametrize(
    ("layers", "link"), [c[1:] for c in FINISH_CASES], ids=[c[0] for c in FINISH_CASES]
)
@pytest.mark.parametrize("options", OPTIONS)
def test_final_dir_mode_and_mtime_never_reach_a_host_dir(
    host: Host, layers: list[Layer], link: str, options: ApplyOptions
) -> None:
    """A directory replaced by a link to a host dir gets no deferred chmod/utime via the link."""
    concrete = []
    for layer in layers:
        made = Layer()
        for info, data in layer.members:
            info = copy.copy(info)
            info.linkname = host.sub(info.linkname)
            made.add(info, data)
        concrete.append(made)
    _apply(host.dest, *concrete, options=options)
    assert _kind(host.dest / link) == "symlink"


@pytest.mark.parametrize("options", OPTIONS)
def test_dir_below_symlink_gets_its_final_mode_inside(host: Host, options: ApplyOptions) -> None:
    """``d -> <outside>/dir`` then dir ``d/sub`` (0700, mtime 1000): set on DEST's copy."""
    _apply(
        host.dest,
        Layer().symlink("d", f"{host.outside}/dir"),
        Layer()
        .dir("d", mode=0o555)
        .dir("d/sub", mode=0o700, mtime=1000)
        .dir("d/sub/deeper", mode=0o500, mtime=1000),
        options=options,
    )
    sub = host.dest / "d" / "sub"
    assert stat.S_IMODE(os.lstat(sub).st_mode) == 0o700
    assert os.lstat(sub).st_mtime_ns == 1000 * 10**9
    assert stat.S_IMODE(os.lstat(sub / "deeper").st_mode) == 0o500


@pytest.mark.parametrize("options", OPTIONS)
def test_root_dir_entry_mode_and_times_stay_on_dest(host: Host, options: ApplyOptions) -> None:
    """``.`` and ``/`` directory entries (0700, mtime 1000) set DEST, never ``<tmp>``."""
    _apply(
        host.dest,
        Layer().dir(".", mode=0o711, mtime=999).file("f", EVIL),
        Layer().dir("/", mode=0o700, mtime=1000, xattrs={"user.evil": b"1"}),
        options=options,
    )
    st = os.lstat(host.dest)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_mtime_ns == 1000 * 10**9


# -- 13. the command line ------------------------------------------------------------

CLI_CASES = [
    ("malformed-whiteout", lambda out: Layer().file("a").file(".wh.."), 5, ".wh.."),
    ("symlink-loop", lambda out: Layer().symlink("a", "b").symlink("b", "a").file("a/x"), 5, "a/x"),
    ("root-symlink", lambda out: Layer().symlink(".", out).file("passwd", EVIL), 5, "."),
    ("hardlink-outside", lambda out: Layer().hardlink("x", "../outside/victim"), 3, "x"),
]


@pytest.mark.parametrize("rootless", [False, True], ids=["privileged", "rootless"])
@pytest.mark.parametrize(
    ("make", "status", "entry"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_hostile_layer_one_line_and_status(
    host: Host, make: Callable[[str], Layer], status: int, entry: str, rootless: bool
) -> None:
    """``python -m extractor apply`` on a hostile layer: one stderr line, its status, no trace."""
    argv = [sys.executable, "-m", "extractor", "apply", str(host.dest), "-"]
    if rootless:
        argv.append("--rootless")
    proc = subprocess.run(
        argv, input=make(str(host.outside)).tar(), capture_output=True, timeout=30, check=False
    )
    err = proc.stderr.decode()
    assert proc.returncode == status, err
    assert proc.stdout == b""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("extractor: error: layer 1/1 ")
    assert f"entry {entry}:" in lines[0]


# -- 14. limits and a real unprivileged run ------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        Layer().symlink("l", "a/" * 2100),
        Layer().file("x" * 300, EVIL),
        Layer().symlink("etc", "x" * 300).file("etc/passwd", EVIL),
    ],
    ids=["symlink-target-past-path-max", "name-past-name-max", "link-component-past-name-max"],
)
def test_names_past_kernel_limits_are_bad_input(host: Host, layer: Layer) -> None:
    """Targets past PATH_MAX and components past NAME_MAX are one bad-input error."""
    _refused(host.dest, layer, kinds=(BadInputError,))


@ROOT_ONLY
def test_unprivileged_cli_run_stays_in_root(shm_dir: Path) -> None:
    """As uid 65534 (setpriv), with a host dir it may write, hostile layers still stay inside."""
    outside = shm_dir / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "passwd").write_text("host passwd\n")
    (outside / "victim").write_text("host file\n")
    (outside / "dir" / "file").write_text("host nested\n")
    dest = shm_dir / "rootfs"
    dest.mkdir()
    for path in (outside, outside / "dir", dest, *outside.rglob("*")):
        os.chown(path, NOBODY, NOBODY)
    os.chmod(outside / "victim", 0o640)
    lower = (
        Layer()
        .symlink("etc", str(outside))
        .symlink("rel", "../outside")
        .symlink("f", f"{outside}/victim")
        .symlink("d", f"{outside}/dir")
        .dir("ro", mode=0o555)
        .dir("ro/sub", mode=0o555)
    )
    upper = (
        Layer()
        .file("etc/passwd", EVIL, mode=0o600)
        .file("rel/victim", EVIL)
        .file("ro/sub/x", EVIL)
        .whiteout("etc/dir")
        .opaque("rel/dir")
        .file("f", EVIL, mode=0o4777)
        .dir("d", mode=0o700)
        .file("d/new", EVIL)
        .file("../../outside/zz-escape", EVIL)
    )
    paths = [lower.write(shm_dir / "l1.tar"), upper.write(shm_dir / "l2.tar")]
    before = snapshot(outside)
    ctimes = {p: os.lstat(p).st_ctime_ns for p in [outside, *outside.rglob("*")]}
    cmd = [
        *AS_NOBODY,
        sys.executable,
        "-m",
        "extractor",
        "apply",
        "-q",
        str(dest),
        *map(str, paths),
    ]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(cmd, cwd=shm_dir, env=env, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    assert snapshot(outside) == before, "HOST PATH WAS CHANGED: THIS IS A PATH ESCAPE"
    assert {p: os.lstat(p).st_ctime_ns for p in [outside, *outside.rglob("*")]} == ctimes
    inner = dest / str(outside).lstrip("/")
    assert (inner / "passwd").read_bytes() == EVIL
    assert (dest / "outside" / "victim").read_bytes() == EVIL
    assert (dest / "ro" / "sub" / "x").read_bytes() == EVIL
    assert (dest / "f").read_bytes() == EVIL
    assert (dest / "d" / "new").read_bytes() == EVIL
    assert (dest / "outside" / "zz-escape").read_bytes() == EVIL
