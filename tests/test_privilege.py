"""Ownership, modes, times, devices and xattrs on real trees, as root, as any user, rootless.

Root-only tests (``@pytest.mark.root``) check that everything is restored
exactly; the "any user" tests run in-process both privileged and with
``rootless=True`` (which takes the non-root code path even as root); the
rootless tests drop to uid 65534 with ``setpriv`` and run the real command.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from builders import MTIME, Layer
from conftest import AS_NOBODY, NOBODY

from extractor import ApplyOptions, ApplyResult, BadInputError, IdMap, apply_layers

NS = 1_000_000_000
OWNER_XATTR = "user.rootlesscontainers"
# `setcap cap_net_raw+ep`: VFS_CAP_REVISION_2 with the effective flag, permitted bit 13.
CAP_NET_RAW = b"\x01\x00\x00\x02\x00\x20\x00\x00" + bytes(12)


def _apply(dest: Path, *layers: Layer, **options: Any) -> ApplyResult:
    """Apply ``layers`` (as in-memory tar streams), oldest first, onto ``dest``."""
    streams = [io.BytesIO(layer.tar()) for layer in layers]
    return apply_layers(dest, streams, ApplyOptions(**options))


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, **fields: Any) -> Any:
    """A hand-made TarInfo with empty uname/gname unless ``fields`` say otherwise."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, MTIME
    info.uname = info.gname = ""
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _rootless_owner(raw: bytes) -> tuple[int, int]:
    """Decode umoci's ``Resource {uint32 uid = 1; uint32 gid = 2;}`` protobuf record."""
    fields: dict[int, int] = {}
    pos = 0
    while pos < len(raw):
        key, pos = _varint(raw, pos)
        assert key & 7 == 0, f"field {key >> 3} is not a varint: {raw!r}"
        fields[key >> 3], pos = _varint(raw, pos)
    assert set(fields) <= {1, 2}, raw
    return fields.get(1, 0), fields.get(2, 0)


def _xattrs(path: Path) -> dict[str, bytes]:
    return {k: os.getxattr(path, k, follow_symlinks=False) for k in os.listxattr(path)}


# -- root: ownership ----------------------------------------------------------------------

OWNED_KINDS = {
    "file": lambda layer: layer.file("x", b"data", uid=1234, gid=5678),
    "dir": lambda layer: layer.dir("x", uid=1234, gid=5678),
    "symlink": lambda layer: layer.symlink("x", "target", uid=1234, gid=5678),
    "fifo": lambda layer: layer.fifo("x", uid=1234, gid=5678),
    "char": lambda layer: layer.device("x", "char", 1, 3, uid=1234, gid=5678),
    "block": lambda layer: layer.device("x", "block", 7, 0, uid=1234, gid=5678),
}


@pytest.mark.root
@pytest.mark.parametrize("kind", OWNED_KINDS)
def test_numeric_owner_applied(tmp_path: Path, kind: str) -> None:
    """Every entry type gets the numeric uid and gid from its header."""
    layer = Layer().file("target", b"t")
    OWNED_KINDS[kind](layer)
    _apply(tmp_path / "root", layer)
    assert _owner(tmp_path / "root" / "x") == (1234, 5678)
    assert _owner(tmp_path / "root" / "target") == (0, 0)


@pytest.mark.root
def test_symlink_owner_is_lchowned_not_its_target(canary: Any) -> None:
    """A symlink's owner is set on the link: neither an inside nor a host target changes."""
    layer = (
        Layer()
        .file("inside", b"i", uid=10, gid=20)
        .symlink("rel", "inside", uid=1234, gid=5678)
        .symlink("host", str(canary.outside / "victim"), uid=1234, gid=5678)
        .symlink("dangling", "nowhere", uid=1234, gid=5678)
    )
    _apply(canary.dest, layer)
    for name in ("rel", "host", "dangling"):
        assert _owner(canary.dest / name) == (1234, 5678), name
    assert _owner(canary.dest / "inside") == (10, 20)


@pytest.mark.root
@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize(
    ("uname", "uid", "gname", "gid"),
    [("root", 1234, "root", 4321), ("nobody", 0, "nogroup", 0), ("bin", 1, "daemon", 0)],
    ids=["root-name-nonroot-id", "nobody-name-root-id", "bin-name-mismatch"],
)
def test_uname_gname_never_override_numeric_ids(
    tmp_path: Path, fmt: int, uname: str, uid: int, gname: str, gid: int
) -> None:
    """uname/gname in the header are ignored; the numeric uid/gid are applied."""
    layer = Layer(fmt)
    fields = {"uid": uid, "gid": gid, "uname": uname, "gname": gname}
    layer.add(_info("d", tarfile.DIRTYPE, 0o755, **fields))
    layer.add(_info("d/f", size=2, **fields), b"hi")
    layer.add(_info("d/l", tarfile.SYMTYPE, 0o777, linkname="f", **fields))
    _apply(tmp_path / "root", layer)
    for name in ("d", "d/f", "d/l"):
        assert _owner(tmp_path / "root" / name) == (uid, gid), name


@pytest.mark.root
def test_child_of_setgid_dir_gets_its_own_gid(tmp_path: Path) -> None:
    """A file and a dir inside a setgid directory end with their own gid, not the inherited one."""
    layer = (
        Layer()
        .dir("sg", mode=0o2775, uid=1000, gid=1000)
        .file("sg/f", b"x", mode=0o644, uid=0, gid=0)
        .dir("sg/d", mode=0o755, uid=0, gid=0)
    )
    _apply(tmp_path / "root", layer)
    root = tmp_path / "root"
    assert (_owner(root / "sg"), _mode(root / "sg")) == ((1000, 1000), 0o2775)
    assert (_owner(root / "sg/f"), _mode(root / "sg/f")) == ((0, 0), 0o644)
    assert (_owner(root / "sg/d"), _mode(root / "sg/d")) == ((0, 0), 0o755)


# -- root: special mode bits ---------------------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize(
    ("kind", "mode"),
    [
        ("file", 0o4755),
        ("file", 0o2755),
        ("file", 0o6711),
        ("file", 0o2644),  # setgid without group exec (mandatory-locking style)
        ("file", 0o7777),
        ("dir", 0o2775),
        ("dir", 0o1777),
        ("dir", 0o3770),
        ("dir", 0o7755),
    ],
    ids=lambda v: f"{v:o}" if isinstance(v, int) else v,
)
def test_special_bits_survive_on_non_root_owned_entries(
    tmp_path: Path, kind: str, mode: int
) -> None:
    """setuid/setgid/sticky survive on entries owned by a non-root uid (chown comes first)."""
    layer = Layer()
    if kind == "file":
        layer.file("x", b"#!/bin/sh\n", mode=mode, uid=1000, gid=1000)
    else:
        layer.dir("x", mode=mode, uid=1000, gid=1000).file("x/child", b"c")
    _apply(tmp_path / "root", layer)
    x = tmp_path / "root" / "x"
    assert _owner(x) == (1000, 1000)
    assert oct(_mode(x)) == oct(mode)


@pytest.mark.root
def test_special_bits_survive_a_dir_relisted_with_new_owner(tmp_path: Path) -> None:
    """A directory re-listed by a later layer with a new owner gets exactly its new mode bits."""
    first = Layer().dir("d", mode=0o2775, uid=1000, gid=1000).file("d/f", b"f")
    second = Layer().dir("d", mode=0o4750, uid=2000, gid=3000)
    _apply(tmp_path / "root", first, second)
    d = tmp_path / "root" / "d"
    assert (_owner(d), oct(_mode(d))) == ((2000, 3000), oct(0o4750))
    assert (d / "f").read_bytes() == b"f"


@pytest.mark.root
def test_setuid_file_replaced_by_later_layer_keeps_new_bits(tmp_path: Path) -> None:
    """A setuid file from a lower layer replaced by a new owner keeps the new entry's bits."""
    first = Layer().file("bin/su", b"old", mode=0o4755, uid=0, gid=0)
    second = Layer().file("bin/su", b"new", mode=0o6755, uid=1000, gid=42)
    _apply(tmp_path / "root", first, second)
    su = tmp_path / "root" / "bin" / "su"
    assert (su.read_bytes(), _owner(su), oct(_mode(su))) == (b"new", (1000, 42), oct(0o6755))


# -- root: devices --------------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize(
    ("kind", "major", "minor", "mode", "uid", "gid"),
    [
        ("char", 1, 3, 0o666, 0, 0),  # /dev/null
        ("char", 5, 1, 0o620, 0, 5),  # /dev/console, group tty
        ("char", 136, 0, 0o600, 1000, 5),
        ("block", 7, 0, 0o660, 0, 6),  # /dev/loop0, group disk
        ("block", 8, 17, 0o640, 0, 6),
        ("block", 259, 65536, 0o600, 0, 0),  # big minor (NVMe partitions)
        ("char", 4095, 1048575, 0o644, 0, 0),  # the largest major and minor Linux has
    ],
)
def test_device_nodes_created_with_numbers_and_mode(
    tmp_path: Path, kind: str, major: int, minor: int, mode: int, uid: int, gid: int
) -> None:
    """Char and block devices are made with the right type, major/minor, mode and owner."""
    layer = Layer().dir("dev").device("dev/node", kind, major, minor, mode=mode, uid=uid, gid=gid)
    _apply(tmp_path / "root", layer)
    st = os.lstat(tmp_path / "root" / "dev" / "node")
    is_type = stat.S_ISCHR if kind == "char" else stat.S_ISBLK
    assert is_type(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (major, minor)
    assert oct(stat.S_IMODE(st.st_mode)) == oct(mode)
    assert (st.st_uid, st.st_gid) == (uid, gid)


@pytest.mark.root
def test_device_replaces_lower_file_and_file_replaces_lower_device(tmp_path: Path) -> None:
    """A device node over a lower-layer file replaces it, and vice versa."""
    first = Layer().file("a", b"file").device("b", "block", 7, 1)
    second = Layer().device("a", "char", 1, 5).file("b", b"now a file")
    _apply(tmp_path / "root", first, second)
    st = os.lstat(tmp_path / "root" / "a")
    assert stat.S_ISCHR(st.st_mode) and os.minor(st.st_rdev) == 5
    assert (tmp_path / "root" / "b").read_bytes() == b"now a file"


# -- root: xattrs ---------------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize("mode", [0o755, 0o4755], ids=["plain", "setuid"])
def test_security_capability_survives_on_non_root_owned_file(tmp_path: Path, mode: int) -> None:
    """security.capability is set after chown (which would clear it), with the mode intact."""
    layer = Layer().file(
        "usr/bin/ping",
        b"\x7fELF" + bytes(100),
        mode=mode,
        uid=1000,
        gid=1000,
        xattrs={"security.capability": CAP_NET_RAW},
    )
    _apply(tmp_path / "root", layer)
    ping = tmp_path / "root" / "usr" / "bin" / "ping"
    assert os.getxattr(ping, "security.capability") == CAP_NET_RAW
    assert (_owner(ping), oct(_mode(ping))) == ((1000, 1000), oct(mode))
    assert ping.read_bytes() == b"\x7fELF" + bytes(100)


@pytest.mark.root
def test_security_capability_survives_getcap(tmp_path: Path) -> None:
    """The capability written is the one getcap(8) reads back as cap_net_raw=ep."""
    layer = Layer().file(
        "ping", b"x", mode=0o755, uid=33, gid=33, xattrs={"security.capability": CAP_NET_RAW}
    )
    _apply(tmp_path / "root", layer)
    out = subprocess.run(
        ["getcap", str(tmp_path / "root" / "ping")], capture_output=True, text=True, check=True
    ).stdout
    assert "cap_net_raw=ep" in out


XATTRS = {
    "user.mime_type": b"text/plain",
    "user.binary": b"\x00\xff\x01\xfe",
    "user.empty": b"",
    "trusted.overlay.opaque": b"y",
    "trusted.md5": b"0123456789abcdef",
}


@pytest.mark.root
@pytest.mark.parametrize("kind", ["file", "dir", "file-non-root-owner", "dir-non-root-owner"])
def test_trusted_and_user_xattrs_on_files_and_dirs(tmp_path: Path, kind: str) -> None:
    """trusted.* and user.* xattrs (binary and empty values too) are set on files and dirs."""
    owner = 1000 if "non-root" in kind else 0
    layer = Layer()
    if kind.startswith("file"):
        layer.file("x", b"data", uid=owner, gid=owner, xattrs=XATTRS)
    else:
        layer.dir("x", uid=owner, gid=owner, xattrs=XATTRS).file("x/child", b"c")
    _apply(tmp_path / "root", layer)
    assert _xattrs(tmp_path / "root" / "x") == XATTRS


# -- root: id maps ------------------------------------------------------------------------

MAP_0_100000 = IdMap.parse("0:100000:65536")


@pytest.mark.root
def test_id_maps_shift_ownership(tmp_path: Path) -> None:
    """--uid-map/--gid-map 0:100000:65536 shift every owner: 0 -> 100000, 33 -> 100033."""
    layer = (
        Layer()
        .add(_info(".", tarfile.DIRTYPE, 0o755))
        .dir("etc", uid=0, gid=0)
        .file("etc/passwd", b"root", uid=0, gid=0)
        .dir("var/www", uid=33, gid=33)
        .file("var/www/index.html", b"hi", uid=33, gid=34)
        .symlink("var/www/link", "index.html", uid=33, gid=33)
        .fifo("var/www/fifo", uid=65535, gid=65535)
        .device("null", "char", 1, 3, uid=0, gid=5)
    )
    _apply(
        tmp_path / "root",
        layer,
        uid_maps=(MAP_0_100000,),
        gid_maps=(MAP_0_100000,),
    )
    root = tmp_path / "root"
    assert _owner(root) == (100000, 100000)
    assert _owner(root / "etc") == (100000, 100000)
    assert _owner(root / "etc" / "passwd") == (100000, 100000)
    assert _owner(root / "var" / "www") == (100033, 100033)
    assert _owner(root / "var" / "www" / "index.html") == (100033, 100034)
    assert _owner(root / "var" / "www" / "link") == (100033, 100033)
    assert _owner(root / "var" / "www" / "fifo") == (165535, 165535)
    assert _owner(root / "null") == (100000, 100005)


@pytest.mark.root
def test_several_id_map_ranges(tmp_path: Path) -> None:
    """Ids are shifted by whichever of several ranges contains them; uid and gid maps differ."""
    uid_maps = (IdMap.parse("0:100000:1000"), IdMap.parse("1000:200000:1000"))
    gid_maps = (IdMap.parse("0:300000:2000"),)
    layer = Layer().file("a", uid=999, gid=999).file("b", uid=1000, gid=1000).file("c", uid=1500)
    _apply(tmp_path / "root", layer, uid_maps=uid_maps, gid_maps=gid_maps)
    root = tmp_path / "root"
    assert _owner(root / "a") == (100999, 300999)
    assert _owner(root / "b") == (200000, 301000)
    assert _owner(root / "c") == (200500, 300000)


@pytest.mark.parametrize(
    ("uid", "gid", "what"),
    [(65536, 0, "uid 65536"), (0, 70000, "gid 70000"), (4_000_000, 4_000_000, "uid 4000000")],
)
def test_id_outside_map_is_bad_input_naming_entry(
    tmp_path: Path, uid: int, gid: int, what: str
) -> None:
    """An owner outside the --uid-map/--gid-map is a BadInputError (exit 3) naming the entry."""
    layer = Layer().file("ok", b"ok").dir("srv").file("srv/outside", b"x", uid=uid, gid=gid)
    with pytest.raises(BadInputError) as info:
        _apply(
            tmp_path / "root",
            layer,
            uid_maps=(MAP_0_100000,),
            gid_maps=(MAP_0_100000,),
        )
    error = info.value
    assert error.exit_code == 3
    assert error.entry == "srv/outside"
    assert "srv/outside" in str(error) and what in str(error)
    assert error.layer is not None and "1/1" in error.layer


# -- any user: times ----------------------------------------------------------------------

ROOTLESS = pytest.mark.parametrize("rootless", [False, True], ids=["default", "rootless"])


def _ns_entry(name: str, kind: bytes, mtime: str, **fields: Any) -> Any:
    """A TarInfo whose PAX mtime record is exactly ``mtime`` (nanosecond digits kept)."""
    info = _info(name, kind, **fields)
    info.mtime = int(mtime.split(".")[0])
    info.pax_headers = {"mtime": mtime}
    return info


@ROOTLESS
@pytest.mark.parametrize(
    ("mtime", "expected_ns"),
    [
        ("1600000000.123456789", 1_600_000_000_123_456_789),
        ("1600000000.000000001", 1_600_000_000_000_000_001),
        ("1600000000.5", 1_600_000_000_500_000_000),
        ("1234567890", 1_234_567_890_000_000_000),
        ("86400.999999999", 86_400_999_999_999),
    ],
)
def test_file_mtime_nanoseconds_from_pax(
    tmp_path: Path, rootless: bool, mtime: str, expected_ns: int
) -> None:
    """A PAX mtime is applied to the nanosecond on files, dirs, symlinks and FIFOs."""
    layer = Layer()
    layer.add(_ns_entry("f", tarfile.REGTYPE, mtime, size=3), b"abc")
    layer.add(_ns_entry("d", tarfile.DIRTYPE, mtime, mode=0o755))
    layer.add(_ns_entry("l", tarfile.SYMTYPE, mtime, mode=0o777, linkname="f"))
    layer.add(_ns_entry("p", tarfile.FIFOTYPE, mtime))
    _apply(tmp_path / "root", layer, rootless=rootless)
    for name in ("f", "d", "l", "p"):
        assert os.lstat(tmp_path / "root" / name).st_mtime_ns == expected_ns, name


@ROOTLESS
def test_symlink_mtime_does_not_follow_link(canary: Any, rootless: bool) -> None:
    """A symlink's mtime is set on the link; its target (inside or on the host) keeps its own."""
    target_ns = 1_500_000_000_000_000_000
    layer = (
        Layer()
        .file("target", b"t", mtime=1_500_000_000)
        .symlink("rel", "target", mtime=1_600_000_001)
        .symlink("abs", "/target", mtime=1_600_000_002)
        .symlink("host", str(canary.outside / "victim"), mtime=1_600_000_003)
        .symlink("dangling", "nowhere/at/all", mtime=1_600_000_004)
    )
    _apply(canary.dest, layer, rootless=rootless)
    for name, sec in (("rel", 1), ("abs", 2), ("host", 3), ("dangling", 4)):
        assert os.lstat(canary.dest / name).st_mtime_ns == (1_600_000_000 + sec) * NS, name
    assert os.lstat(canary.dest / "target").st_mtime_ns == target_ns


@ROOTLESS
def test_symlink_mtime_kept_when_later_layer_writes_target(tmp_path: Path, rootless: bool) -> None:
    """Rewriting a symlink's target in a later layer leaves the link's mtime alone."""
    first = Layer().file("t", b"1", mtime=1_000).symlink("l", "t", mtime=2_000)
    second = Layer().file("t", b"2", mtime=3_000)
    _apply(tmp_path / "root", first, second, rootless=rootless)
    assert os.lstat(tmp_path / "root" / "l").st_mtime_ns == 2_000 * NS
    assert os.lstat(tmp_path / "root" / "t").st_mtime_ns == 3_000 * NS


@ROOTLESS
def test_dir_mtimes_set_at_end_of_stack(tmp_path: Path, rootless: bool) -> None:
    """Directory mtimes survive children written later in the layer and by later layers."""
    first = (
        Layer()
        .dir("d", mtime=1_000)
        .dir("d/sub", mtime=2_000)
        .file("d/a", b"a", mtime=9_000)
        .file("d/sub/x", b"x", mtime=9_000)
        .dir("d/sub/deep", mtime=3_000)
        .file("d/gone", b"g")
        .dir("e", mtime=4_000)
        .file("e/f", b"f")
    )
    second = (
        Layer()
        .file("d/b", b"b", mtime=9_000)  # d is not listed again
        .file("d/sub/deep/y", b"y", mtime=9_000)
        .whiteout("d/gone")
        .hardlink("d/sub/link", "d/a")
        .symlink("d/sym", "a")
        .dir("e", mtime=5_000)  # e is listed again: the new time wins
        .file("e/g", b"g")
    )
    third = Layer().fifo("d/sub/deep/pipe").opaque("e").file("e/h", b"h")
    _apply(tmp_path / "root", first, second, third, rootless=rootless)
    root = tmp_path / "root"
    expected = {"d": 1_000, "d/sub": 2_000, "d/sub/deep": 3_000, "e": 5_000}
    got = {name: os.lstat(root / name).st_mtime_ns // NS for name in expected}
    assert got == expected
    assert sorted(os.listdir(root / "d")) == ["a", "b", "sub", "sym"]
    assert sorted(os.listdir(root / "e")) == ["h"]


@ROOTLESS
def test_root_entry_mode_and_mtime_set_at_end(tmp_path: Path, rootless: bool) -> None:
    """The `./` entry's mode and mtime are applied to DEST after everything below is written."""
    layer = Layer().add(_info("./", tarfile.DIRTYPE, 0o750, mtime=7_000)).file("a", b"a")
    later = Layer().file("b", b"b")
    _apply(tmp_path / "root", layer, later, rootless=rootless)
    st = os.lstat(tmp_path / "root")
    assert (oct(stat.S_IMODE(st.st_mode)), st.st_mtime_ns) == (oct(0o750), 7_000 * NS)


# -- any user: modes ----------------------------------------------------------------------


@pytest.fixture
def strict_umask() -> Any:
    """Run with umask 077, so any mode the engine leaves to the umask shows."""
    old = os.umask(0o077)
    yield
    os.umask(old)


@ROOTLESS
@pytest.mark.parametrize("mode", [0o000, 0o444, 0o755, 0o600, 0o777, 0o1777, 0o4755, 0o2711])
@pytest.mark.parametrize("kind", ["file", "dir", "fifo"])
def test_modes_exact(
    tmp_path: Path, strict_umask: None, rootless: bool, kind: str, mode: int
) -> None:
    """File, dir and FIFO modes are exact, whatever the umask."""
    layer = Layer()
    if kind == "file":
        layer.file("x", b"content", mode=mode)
    elif kind == "dir":
        layer.dir("x", mode=mode).file("x/child", b"c")
    else:
        layer.fifo("x", mode=mode)
    _apply(tmp_path / "root", layer, rootless=rootless)
    assert oct(_mode(tmp_path / "root" / "x")) == oct(mode)


@ROOTLESS
def test_implicit_parents_are_0755(tmp_path: Path, strict_umask: None, rootless: bool) -> None:
    """Parents with no entry of their own are made 0755 despite a strict umask."""
    _apply(tmp_path / "root", Layer().file("a/b/c/f", b"x"), rootless=rootless)
    for name in ("a", "a/b", "a/b/c"):
        assert oct(_mode(tmp_path / "root" / name)) == oct(0o755), name


@ROOTLESS
@pytest.mark.parametrize("mode", [0o555, 0o500, 0o000, 0o111])
def test_read_only_dir_receives_children(tmp_path: Path, rootless: bool, mode: int) -> None:
    """A read-only dir gets children from its own and later layers and ends with its mode."""
    first = (
        Layer()
        .dir("ro", mode=mode)
        .file("ro/same", b"same layer")
        .dir("ro/sub", mode=mode)
        .file("ro/sub/deep", b"deep")
        .symlink("ro/link", "same")
        .fifo("ro/pipe")
    )
    second = (
        Layer().file("ro/later", b"later layer").file("ro/sub/later", b"l2").whiteout("ro/pipe")
    )
    third = Layer().dir("ro/new", mode=mode).file("ro/new/f", b"3")
    _apply(tmp_path / "root", first, second, third, rootless=rootless)
    ro = tmp_path / "root" / "ro"
    modes = {}
    for name in ("ro", "ro/sub", "ro/new"):  # parents first
        modes[name] = oct(_mode(tmp_path / "root" / name))
        if os.geteuid() != 0:  # open it up to look inside
            os.chmod(tmp_path / "root" / name, 0o755)
    assert modes == dict.fromkeys(("ro", "ro/sub", "ro/new"), oct(mode))
    assert sorted(os.listdir(ro)) == ["later", "link", "new", "same", "sub"]
    assert (ro / "same").read_bytes() == b"same layer"
    assert (ro / "later").read_bytes() == b"later layer"
    assert (ro / "sub" / "deep").read_bytes() == b"deep"
    assert (ro / "sub" / "later").read_bytes() == b"l2"
    assert (ro / "new" / "f").read_bytes() == b"3"


# -- rootless as root, in-process ----------------------------------------------------------


@pytest.mark.root
def test_rootless_option_as_root_does_not_chown(tmp_path: Path) -> None:
    """--rootless as root: no chown; the owner goes into user.rootlesscontainers instead."""
    layer = (
        Layer()
        .dir("d", uid=1000, gid=1000)
        .file("d/f", b"x", mode=0o4755, uid=1234, gid=5678)
        .file("d/rootgroup", b"x", uid=0, gid=5)
        .file("d/root", b"x", uid=0, gid=0)
        .symlink("d/l", "f", uid=1234, gid=5678)
        .fifo("d/p", uid=1234, gid=5678)
    )
    result = _apply(tmp_path / "root", layer, rootless=True)
    d = tmp_path / "root" / "d"
    for name in ("", "f", "rootgroup", "root", "l", "p"):
        assert _owner(d / name) == (0, 0), name
    assert result.rootless is True
    assert _rootless_owner(os.getxattr(d, OWNER_XATTR)) == (1000, 1000)
    assert _rootless_owner(os.getxattr(d / "f", OWNER_XATTR)) == (1234, 5678)
    assert _rootless_owner(os.getxattr(d / "rootgroup", OWNER_XATTR)) == (0, 5)
    assert OWNER_XATTR not in os.listxattr(d / "root")
    assert oct(_mode(d / "f")) == oct(0o4755)


@pytest.mark.root
def test_rootless_option_as_root_skips_devices_with_warning(tmp_path: Path) -> None:
    """--rootless as root: device nodes are not made, and each is a counted warning."""
    layer = Layer().device("dev/null", "char", 1, 3).device("dev/loop0", "block", 7, 0)
    result = _apply(tmp_path / "root", layer, rootless=True)
    assert os.listdir(tmp_path / "root" / "dev") == []
    assert [(w.event, w.path) for w in result.warnings] == [
        ("device_skipped", "dev/null"),
        ("device_skipped", "dev/loop0"),
    ]
    assert result.layers[0].warnings == 2
    assert result.layers[0].skipped == 2


@pytest.mark.root
def test_rootless_option_as_root_skips_privileged_xattrs(tmp_path: Path) -> None:
    """--rootless as root: security.*/trusted.* xattrs are skipped with warnings, user.* kept."""
    xattrs = {
        "security.capability": CAP_NET_RAW,
        "trusted.overlay.opaque": b"y",
        "user.keep": b"kept",
    }
    layer = Layer().file("f", b"x", xattrs=xattrs).dir("d", xattrs=xattrs)
    result = _apply(tmp_path / "root", layer, rootless=True)
    for name in ("f", "d"):
        got = _xattrs(tmp_path / "root" / name)
        assert got == {"user.keep": b"kept"}, name
    skipped = sorted((w.path, w.event) for w in result.warnings)
    assert skipped == [("d", "xattr_skipped")] * 2 + [("f", "xattr_skipped")] * 2


# -- rootless: a real unprivileged user ----------------------------------------------------


class Nobody:
    """Runs ``python -m extractor apply`` as uid/gid 65534 into ``work/rootfs``."""

    def __init__(self, shm: Path):
        self.shm = shm
        self.work = shm / "work"
        self.work.mkdir()
        os.chown(self.work, NOBODY, NOBODY)
        self.dest = self.work / "rootfs"
        self.count = 0

    def apply(self, *layers: Layer) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        """Apply ``layers`` as nobody; returns the process and the --report document."""
        paths = []
        for layer in layers:
            path = layer.write(self.shm / f"layer{self.count}.tar")
            os.chmod(path, 0o644)
            paths.append(str(path))
            self.count += 1
        report = self.work / "report.json"
        if report.exists():
            report.unlink()
        cmd = [
            *AS_NOBODY,
            sys.executable,
            "-m",
            "extractor",
            "apply",
            str(self.dest),
            *paths,
            "--report",
            str(report),
        ]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run(
            cmd, cwd=self.shm, env=env, capture_output=True, text=True, timeout=60
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        doc = json.loads(report.read_text()) if report.exists() else {}
        return proc, doc


@pytest.fixture
def nobody(shm_dir: Path) -> Nobody:
    """A ``Nobody`` runner in a world-readable tmpfs directory."""
    return Nobody(shm_dir)


@pytest.mark.root
def test_nobody_records_owner_in_xattr(nobody: Nobody) -> None:
    """As nobody, entries owned by 1000 end owned by 65534, the owner kept in an xattr."""
    layer = (
        Layer()
        .dir("home/user", mode=0o750, uid=1000, gid=1000)
        .file("home/user/f", b"data", mode=0o640, uid=1000, gid=1000)
        .file("home/user/g", b"data", uid=1000, gid=100)
        .file("home/user/big", b"data", uid=300000, gid=2**31)
        .file("home/user/rootgroup", b"data", uid=0, gid=42)
        .file("home/user/root", b"data", uid=0, gid=0)
        .symlink("home/user/l", "f", uid=1000, gid=1000)
        .fifo("home/user/p", uid=1000, gid=1000)
    )
    proc, doc = nobody.apply(layer)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert doc["rootless"] is True
    user = nobody.dest / "home" / "user"
    for path in (user, *(user / n for n in ("f", "g", "big", "rootgroup", "root", "l", "p"))):
        assert _owner(path) == (NOBODY, NOBODY), path
    expected = {
        "": (1000, 1000),
        "f": (1000, 1000),
        "g": (1000, 100),
        "big": (300000, 2**31),
        "rootgroup": (0, 42),
    }
    for name, owner in expected.items():
        assert _rootless_owner(os.getxattr(user / name, OWNER_XATTR)) == owner, name
    assert OWNER_XATTR not in os.listxattr(user / "root")
    assert oct(_mode(user)) == oct(0o750)
    assert oct(_mode(user / "f")) == oct(0o640)
    assert (user / "f").read_bytes() == b"data"


@pytest.mark.root
def test_nobody_skips_devices_with_counted_warnings(nobody: Nobody) -> None:
    """As nobody, device nodes are skipped and counted (report warnings/skipped), exit 0."""
    first = Layer().file("keep", b"k").file("dev/console", b"placeholder")
    second = (
        Layer()
        .device("dev/null", "char", 1, 3)
        .device("dev/console", "char", 5, 1)
        .device("dev/sda", "block", 8, 0)
        .fifo("dev/initctl", mode=0o600)
    )
    proc, doc = nobody.apply(first, second)
    assert proc.returncode == 0, proc.stderr
    dev = nobody.dest / "dev"
    assert sorted(os.listdir(dev)) == ["initctl"]
    assert stat.S_ISFIFO(os.lstat(dev / "initctl").st_mode)
    layer = doc["layers"][1]
    assert layer["warnings"] == 3
    assert layer["skipped"] == 3
    assert doc["layers"][0]["warnings"] == 0
    events = sorted((w["event"], w["path"], w["layer"]) for w in doc["warnings"])
    assert events == [
        ("device_skipped", "dev/console", 1),
        ("device_skipped", "dev/null", 1),
        ("device_skipped", "dev/sda", 1),
    ]
    assert doc["totals"]["warnings"] == 3


@pytest.mark.root
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_nobody_skips_privileged_xattrs_with_warnings(nobody: Nobody, kind: str) -> None:
    """As nobody, security.capability and trusted.* are skipped with warnings; user.* is set."""
    xattrs = {
        "security.capability": CAP_NET_RAW,
        "trusted.overlay.opaque": b"y",
        "user.keep": b"kept",
    }
    layer = Layer()
    if kind == "file":
        layer.file("x", b"elf", mode=0o755, xattrs=xattrs)
    else:
        layer.dir("x", xattrs=xattrs).file("x/f", b"c")
    proc, doc = nobody.apply(layer)
    assert proc.returncode == 0, proc.stderr
    x = nobody.dest / "x"
    assert _xattrs(x) == {"user.keep": b"kept"}
    assert doc["layers"][0]["warnings"] == 2
    got = sorted((w["event"], w["path"], w["detail"].split(":")[0]) for w in doc["warnings"])
    assert got == [
        ("xattr_skipped", "x", "security.capability"),
        ("xattr_skipped", "x", "trusted.overlay.opaque"),
    ]


@pytest.mark.root
@pytest.mark.parametrize("mode", [0o555, 0o000])
def test_nobody_read_only_dirs_receive_children(nobody: Nobody, mode: int) -> None:
    """As nobody, read-only dirs get children from the same and later layers and end read-only."""
    first = (
        Layer()
        .dir("ro", mode=mode)
        .file("ro/a", b"a")
        .dir("ro/sub", mode=mode)
        .file("ro/sub/b", b"b")
        .fifo("ro/sub/pipe")
    )
    second = Layer().file("ro/c", b"c").file("ro/sub/d", b"d").whiteout("ro/a")
    proc, _ = nobody.apply(first, second)
    assert proc.returncode == 0, proc.stderr
    ro = nobody.dest / "ro"
    assert oct(_mode(ro)) == oct(mode)
    assert oct(_mode(ro / "sub")) == oct(mode)
    assert sorted(os.listdir(ro)) == ["c", "sub"]
    assert sorted(os.listdir(ro / "sub")) == ["b", "d", "pipe"]
    assert (ro / "sub" / "d").read_bytes() == b"d"
    assert stat.S_ISFIFO(os.lstat(ro / "sub" / "pipe").st_mode)


@pytest.mark.root
@pytest.mark.parametrize("mode", [0o555, 0o000])
def test_nobody_updates_existing_tree_with_read_only_dirs(nobody: Nobody, mode: int) -> None:
    """As nobody, a second apply writes into and whiteouts from read-only dirs a first one left."""
    first = Layer().dir("ro", mode=mode).dir("ro/sub", mode=mode).file("ro/sub/old", b"o")
    proc, _ = nobody.apply(first)
    assert proc.returncode == 0, proc.stderr
    assert oct(_mode(nobody.dest / "ro")) == oct(mode)
    second = Layer().file("ro/new", b"n").file("ro/sub/new", b"n").whiteout("ro/sub/old")
    proc, doc = nobody.apply(second)
    assert proc.returncode == 0, proc.stderr
    ro = nobody.dest / "ro"
    assert sorted(os.listdir(ro)) == ["new", "sub"]
    assert sorted(os.listdir(ro / "sub")) == ["new"]
    assert oct(_mode(ro)) == oct(mode)
    assert oct(_mode(ro / "sub")) == oct(mode)
    assert doc["exit_code"] == 0


@pytest.mark.root
def test_nobody_creates_fifos_and_exact_modes(nobody: Nobody) -> None:
    """As nobody, FIFOs are made and file, dir and FIFO modes (setuid, sticky too) are exact."""
    layer = (
        Layer()
        .fifo("p1", mode=0o640)
        .fifo("p2", mode=0o000)
        .file("suid", b"x", mode=0o4755)
        .file("none", b"x", mode=0o000)
        .dir("tmp", mode=0o1777)
        .file("tmp/f", b"x", mode=0o444)
    )
    proc, doc = nobody.apply(layer)
    assert proc.returncode == 0, proc.stderr
    dest = nobody.dest
    assert stat.S_ISFIFO(os.lstat(dest / "p1").st_mode)
    assert stat.S_ISFIFO(os.lstat(dest / "p2").st_mode)
    modes = {n: _mode(dest / n) for n in ("p1", "p2", "suid", "none", "tmp", "tmp/f")}
    assert modes == {
        "p1": 0o640,
        "p2": 0o000,
        "suid": 0o4755,
        "none": 0o000,
        "tmp": 0o1777,
        "tmp/f": 0o444,
    }
    assert doc["layers"][0]["warnings"] == 0


# -- root: files that need no fchown or fchmod ---------------------------------------------
# A file created as root in a directory that is neither setgid nor carries a default ACL
# already has uid 0, gid 0 and its mode less the umask, so the engine skips fchown and
# fchmod there. These cases are where that shortcut would leave the wrong owner or mode.


@pytest.mark.root
def test_dir_made_setgid_after_files_went_into_it(tmp_path: Path) -> None:
    """A directory relisted as setgid after its parent fd was cached: later files keep gid 0."""
    lower = Layer().dir("d", mode=0o755).file("d/a", b"a")
    upper = Layer().dir("d", mode=0o2775, gid=1000).file("d/b", b"b", gid=0)
    same = Layer().dir("e").file("e/a").dir("e", mode=0o2775, gid=1000).file("e/b")
    _apply(tmp_path / "root", lower, upper, same)
    for name in ("d/a", "d/b", "e/a", "e/b"):
        assert _owner(tmp_path / "root" / name) == (0, 0), name


@pytest.mark.root
def test_existing_setgid_dir_in_dest_does_not_lend_its_gid(tmp_path: Path) -> None:
    """DEST already holds a setgid directory: files a layer writes there get the layer's gid."""
    existing = tmp_path / "root" / "srv"
    existing.mkdir(parents=True)
    os.chown(existing, 0, 1000)
    os.chmod(existing, 0o2775)
    _apply(tmp_path / "root", Layer().file("srv/f", b"x", mode=0o644))
    assert (_owner(existing / "f"), _mode(existing / "f")) == ((0, 0), 0o644)


def _default_acl_nobody_but_owner() -> bytes:
    # POSIX ACL xattr: version 2, then (tag, perm, id) for u::rwx, g::---, o::---.
    import struct

    entries = [(0x01, 7), (0x04, 0), (0x20, 0)]
    return struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in entries
    )


@pytest.mark.root
def test_default_acl_on_existing_dir_does_not_change_modes(tmp_path: Path) -> None:
    """A default ACL would make a 0644 file 0600 on creation; the mode is the layer's."""
    existing = tmp_path / "root" / "acl"
    existing.mkdir(parents=True)
    try:
        os.setxattr(existing, "system.posix_acl_default", _default_acl_nobody_but_owner())
    except OSError as e:
        pytest.skip(f"this filesystem takes no POSIX ACLs: {e.strerror}")
    _apply(tmp_path / "root", Layer().file("acl/f", b"x", mode=0o644).dir("acl/sub"))
    assert _mode(existing / "f") == 0o644
    assert _mode(existing / "sub") == 0o755


@pytest.mark.parametrize("umask", [0o077, 0o022, 0o000])
@pytest.mark.parametrize("mode", [0o644, 0o755, 0o600, 0o4755, 0o2711, 0o1777, 0o000])
def test_file_modes_are_exact_whatever_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    """The mode a file gets is the layer's, for any umask (rootless too)."""
    old = os.umask(umask)
    try:
        _apply(tmp_path / "root", Layer().file("f", b"x", mode=mode))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "root" / "f") == mode
