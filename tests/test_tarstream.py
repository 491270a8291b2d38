"""The strict tar reader on hand-built archives: every header dialect and every malformation.

Headers are assembled byte by byte here (``_header``, ``_pax``) so that each
field, checksum and record length is exactly what the test says; real writers
(``tarfile``, GNU tar) are used where the point is to read what they write,
sparse files above all.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from builders import MTIME
from hypothesis import given, settings
from hypothesis import strategies as st

from extractor import ApplyResult, BadInputError, Kind, apply_layers
from extractor.model import Entry
from extractor.tarstream import TarReader

BLOCK = 512
END = bytes(2 * BLOCK)
USTAR = b"ustar\x0000"
GNU = b"ustar  \x00"
MiB = 1 << 20
NS = 1_000_000_000


# -- building archives by hand -------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode() + b"\0"


def _field(value: int | bytes, width: int) -> bytes:
    """An octal number field, or raw bytes (base-256, junk) padded with NULs."""
    if isinstance(value, bytes):
        assert len(value) <= width
        return value.ljust(width, b"\0")
    return _octal(value, width)


def _base256(value: int, width: int) -> bytes:
    """GNU base-256: high bit set, then the two's complement value big-endian."""
    if value >= 0:
        return b"\x80" + value.to_bytes(width - 1, "big")
    return b"\xff" + (value + (1 << (8 * (width - 1)))).to_bytes(width - 1, "big")


def _header(
    name: bytes,
    typeflag: bytes = b"0",
    size: int | bytes = 0,
    *,
    mode: int | bytes = 0o644,
    uid: int | bytes = 0,
    gid: int | bytes = 0,
    mtime: int | bytes = MTIME,
    linkname: bytes = b"",
    magic: bytes = USTAR,
    prefix: bytes = b"",
    tail: bytes = b"",
    checksum: str = "unsigned",
) -> bytes:
    """One 512-byte header block; ``checksum`` is ``unsigned``, ``signed`` or ``bad``."""
    block = bytearray(BLOCK)
    block[0:100] = name.ljust(100, b"\0")
    block[100:108] = _field(mode, 8)
    block[108:116] = _field(uid, 8)
    block[116:124] = _field(gid, 8)
    block[124:136] = _field(size, 12)
    block[136:148] = _field(mtime, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[157:257] = linkname.ljust(100, b"\0")
    block[257:265] = magic
    if prefix:
        block[345:500] = prefix.ljust(155, b"\0")
    if tail:
        block[345 : 345 + len(tail)] = tail
    signed = checksum == "signed"
    total = sum(b - 256 if signed and b > 127 else b for b in block)
    if checksum == "bad":
        total += 1
    block[148:156] = f"{total & 0o777777:06o}".encode() + b"\0 "
    return bytes(block)


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def _member(name: bytes, data: bytes = b"", typeflag: bytes = b"0", **kw: object) -> bytes:
    """A header and its padded data."""
    return _header(name, typeflag, len(data), **kw) + _pad(data)  # type: ignore[arg-type]


def _record(key: bytes, value: bytes) -> bytes:
    """One PAX record ``"%d %s=%s\\n"`` with its self-inclusive length."""
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length).encode()) + len(body) != length:
        length += 1
    return str(length).encode() + body


def _pax(records: list[tuple[bytes, bytes]] | bytes, typeflag: bytes = b"x") -> bytes:
    """An extended header (``x``) or global header (``g``) with its padded payload."""
    payload = records if isinstance(records, bytes) else b"".join(_record(*r) for r in records)
    return _header(b"PaxHeaders/x", typeflag, len(payload)) + _pad(payload)


def _gnu_long(name: bytes, typeflag: bytes = b"L") -> bytes:
    payload = name + b"\0"
    return _header(b"././@LongLink", typeflag, len(payload), magic=GNU) + _pad(payload)


def _entries(archive: bytes) -> list[tuple[Entry, bytes]]:
    """Every entry of ``archive`` with the data stored for it."""
    reader = TarReader(io.BytesIO(archive))
    out = []
    while (entry := reader.next()) is not None:
        data = b""
        while chunk := reader.read_data(1 << 16):
            data += chunk
        out.append((entry, data))
    return out


def _only(archive: bytes) -> Entry:
    (entry, _), *rest = _entries(archive)
    assert not rest
    return entry


def _raw(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _apply(dest: Path, *archives: bytes) -> ApplyResult:
    return apply_layers(dest, [io.BytesIO(a) for a in archives])


def _tarfile(*infos: tuple[tarfile.TarInfo, bytes | None], fmt: int, **kw: object) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(  # type: ignore[call-overload]
        fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape", **kw
    ) as tf:
        for info, data in infos:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, **fields: object
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, 0o644, MTIME
    info.uname = info.gname = ""
    if data is not None:
        info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


# -- name dialects ---------------------------------------------------------------


def test_ustar_prefix_joins_the_name(tmp_path: Path) -> None:
    """A ustar name split into prefix and name fields is read back whole and lands there."""
    long = "usr/share/" + "d" * 80 + "/" + "n" * 90
    archive = _tarfile(_info(long, data=b"ustar\n"), fmt=tarfile.USTAR_FORMAT)
    assert archive[345:500].rstrip(b"\0") == b"usr/share/" + b"d" * 80  # the prefix is used
    entry = _only(archive + END)
    assert (entry.name, entry.path, entry.kind) == (long, long, Kind.FILE)
    _apply(tmp_path, archive)
    assert (tmp_path / long).read_bytes() == b"ustar\n"


def test_hand_made_prefix_and_gnu_magic_ignores_the_prefix_area() -> None:
    """The prefix field counts only under the ustar magic; GNU headers keep times there."""
    ustar = _member(b"README", b"x", prefix=b"usr/share/doc")
    assert _only(ustar + END).path == "usr/share/doc/README"
    gnu = _member(b"README", b"x", magic=GNU, tail=_octal(MTIME, 12) + _octal(MTIME, 12))
    assert _only(gnu + END).path == "README"


def test_gnu_long_names_and_long_link_names(tmp_path: Path) -> None:
    """GNU ``L``/``K`` records give names and link targets longer than 100 bytes."""
    name = "deep/" + "/".join(["segment" + str(i) * 20 for i in range(8)]) + "/file"
    target = "/" + "t" * 250
    archive = _tarfile(
        _info(name, data=b"long\n"),
        _info("sym-" + "s" * 150, tarfile.SYMTYPE, linkname=target),
        _info("hard-" + "h" * 150, tarfile.LNKTYPE, linkname=name),
        fmt=tarfile.GNU_FORMAT,
    )
    assert archive.count(b"././@LongLink") >= 4
    entries = [e for e, _ in _entries(archive)]
    assert [(e.name, e.kind) for e in entries] == [
        (name, Kind.FILE),
        ("sym-" + "s" * 150, Kind.SYMLINK),
        ("hard-" + "h" * 150, Kind.HARDLINK),
    ]
    assert entries[1].linkname == target
    assert entries[2].linkname == name
    _apply(tmp_path, archive)
    assert (tmp_path / name).read_bytes() == b"long\n"
    assert os.readlink(tmp_path / ("sym-" + "s" * 150)) == target
    assert os.stat(tmp_path / ("hard-" + "h" * 150)).st_ino == os.stat(tmp_path / name).st_ino


def test_hand_made_gnu_long_name_and_link_apply_to_the_next_header_only() -> None:
    """A GNU long name or link name is used by the following member, then forgotten."""
    archive = (
        _gnu_long(b"L" * 200)
        + _gnu_long(b"K" * 200, b"K")
        + _member(b"short-sym", typeflag=b"2", linkname=b"short-target", magic=GNU)
        + _member(b"plain", b"p", magic=GNU)
        + END
    )
    (sym, _), (plain, data) = _entries(archive)
    assert (sym.name, sym.kind, sym.linkname) == ("L" * 200, Kind.SYMLINK, "K" * 200)
    assert (plain.name, data) == ("plain", b"p")


PAX_TIMES = {
    "nanoseconds": ("1600000000.123456789", 1_600_000_000_123_456_789),
    "tenths": ("1600000000.1", 1_600_000_000_100_000_000),
    "whole seconds": ("1600000000", 1_600_000_000 * NS),
    "more than nine digits are cut": ("1.1234567891", 1_123_456_789),
    "one nanosecond": ("0.000000001", 1),
    "negative with fraction": ("-1.5", -1_500_000_000),
    "negative below one second": ("-0.25", -250_000_000),
}


@pytest.mark.parametrize(("text", "ns"), PAX_TIMES.values(), ids=PAX_TIMES)
def test_pax_times_with_fractions(text: str, ns: int) -> None:
    """PAX mtime and atime keep their fractional seconds to the nanosecond."""
    archive = _pax([(b"mtime", text.encode()), (b"atime", text.encode())])
    entry = _only(archive + _member(b"f", b"") + END)
    assert (entry.mtime_ns, entry.atime_ns) == (ns, ns)


@pytest.mark.parametrize("text", ["abc", "1.x", "", "1..2", "1.-5", "1_000.5", "1.5_0"])
def test_pax_bad_time_is_bad_input(text: str) -> None:
    """A PAX mtime that is not a decimal number is a BadInputError."""
    archive = _pax([(b"mtime", text.encode())]) + _member(b"f") + END
    with pytest.raises(BadInputError):
        _entries(archive)


def test_pax_path_linkpath_owner_and_times_override_the_header(tmp_path: Path) -> None:
    """PAX path, linkpath, uid, gid, mtime and atime win over the ustar fields."""
    archive = (
        _pax(
            [
                (b"path", b"real/" + b"p" * 200),
                (b"uid", b"70000"),
                (b"gid", b"80000"),
                (b"mtime", b"1600000000.123456789"),
                (b"atime", b"1500000000.5"),
            ]
        )
        + _member(b"header-name", b"pax data", uid=1, gid=2, mtime=5)
        + _pax([(b"linkpath", b"/" + b"L" * 300), (b"path", b"link")])
        + _member(b"header-link", typeflag=b"2", linkname=b"header-target")
        + END
    )
    (f, data), (link, _) = _entries(archive)
    assert (f.name, f.uid, f.gid, data) == ("real/" + "p" * 200, 70000, 80000, b"pax data")
    assert (f.mtime_ns, f.atime_ns) == (1_600_000_000_123_456_789, 1_500_000_000_500_000_000)
    assert (link.name, link.linkname, link.kind) == ("link", "/" + "L" * 300, Kind.SYMLINK)
    assert link.uid == 0  # the per-file records of the first member are gone
    _apply(tmp_path, archive)
    st = os.stat(tmp_path / "real" / ("p" * 200))
    assert (st.st_mtime_ns, st.st_atime_ns) == (
        1_600_000_000_123_456_789,
        1_500_000_000_500_000_000,
    )
    assert os.readlink(tmp_path / "link") == "/" + "L" * 300


@pytest.mark.root
def test_pax_owner_lands_on_disk(tmp_path: Path) -> None:
    """As root, PAX uid/gid are the owner on disk, not the header's numbers."""
    archive = _pax([(b"uid", b"70000"), (b"gid", b"80000")]) + _member(b"f", b"x", uid=1, gid=2)
    _apply(tmp_path, archive)
    st = os.lstat(tmp_path / "f")
    assert (st.st_uid, st.st_gid) == (70000, 80000)


def test_pax_global_header_applies_to_later_members() -> None:
    """A global header sets defaults for the members after it; per-file records win."""
    archive = (
        _member(b"before", uid=1)
        + _pax([(b"uid", b"4242"), (b"mtime", b"1234.5")], b"g")
        + _member(b"plain", uid=1)
        + _pax([(b"uid", b"7")])
        + _member(b"own", uid=1)
        + _pax([(b"uid", b"99")], b"g")
        + _member(b"after-second", uid=1)
        + END
    )
    got = {e.name: (e.uid, e.mtime_ns) for e, _ in _entries(archive)}
    assert got == {
        "before": (1, MTIME * NS),
        "plain": (4242, 1_234_500_000_000),
        "own": (7, 1_234_500_000_000),
        "after-second": (99, 1_234_500_000_000),
    }


def test_pax_global_header_written_by_tarfile() -> None:
    """tarfile's global header (``pax_headers=``) reaches every member."""
    archive = _tarfile(
        _info("a", data=b""),
        _info("b", data=b""),
        fmt=tarfile.PAX_FORMAT,
        pax_headers={"gid": "31337"},
    )
    assert [e.gid for e, _ in _entries(archive)] == [31337, 31337]


XATTRS = {
    "user.binary": b"\x00\xff\n=\x01 not text \x80",
    "user.empty": b"",
    "user.equals": b"a=b=c",
    "trusted.overlay.opaque": b"y",
    "security.capability": b"\x01\x00\x00\x02\x00\x20\x00\x00" + bytes(12),
}


def test_schily_xattrs_round_trip_exact_bytes(tmp_path: Path) -> None:
    """SCHILY.xattr.* records give the exact bytes, binary ones too, in memory and on disk."""
    records = [(b"SCHILY.xattr." + k.encode(), v) for k, v in XATTRS.items()]
    archive = _pax(records) + _member(b"f", b"content") + END
    assert _only(archive).xattrs == XATTRS
    _apply(tmp_path, archive)
    for key, value in XATTRS.items():
        if key.startswith("user.") or os.geteuid() == 0:
            assert os.getxattr(tmp_path / "f", key) == value, key


def test_libarchive_xattr_records_are_base64_and_percent_encoded() -> None:
    """LIBARCHIVE.xattr.NAME holds base64 of the value, with the name %-encoded."""
    value = b"\x00\x01binary\xff"
    encoded = base64.b64encode(value).rstrip(b"=")
    archive = _pax([(b"LIBARCHIVE.xattr.user.with%20space", encoded)]) + _member(b"f") + END
    assert _only(archive).xattrs == {"user.with space": value}


# -- numbers -------------------------------------------------------------------------


def test_base256_uid_gid_and_size() -> None:
    """GNU base-256 fields decode: ids past the octal range and sizes past 8 GiB."""
    big_uid, big_gid = 3_000_000_000, 2**31 + 5
    small = _member(
        b"small", b"d" * 1000, uid=_base256(big_uid, 8), gid=_base256(big_gid, 8), magic=GNU
    )
    (entry, data), *_ = _entries(small + END)
    assert (entry.uid, entry.gid, data) == (big_uid, big_gid, b"d" * 1000)
    sized = _header(b"small-size", size=_base256(1000, 12), magic=GNU) + _pad(b"s" * 1000)
    assert _entries(sized + END)[0][1] == b"s" * 1000
    huge = _header(b"huge", size=_base256(2**33 + 5, 12), magic=GNU)
    assert TarReader(io.BytesIO(huge)).next().size == 2**33 + 5  # type: ignore[union-attr]


def test_base256_negative_mtime() -> None:
    """A negative base-256 mtime (before 1970) decodes to a negative time."""
    archive = _member(b"old", mtime=_base256(-86400, 12), magic=GNU) + END
    assert _only(archive).mtime_ns == -86400 * NS


@pytest.mark.root
def test_base256_uid_lands_on_disk(tmp_path: Path) -> None:
    """As root, a base-256 uid beyond the octal field's range is the owner on disk."""
    archive = _member(b"f", b"x", uid=_base256(3_000_000_000, 8), gid=_base256(70000, 8))
    _apply(tmp_path, archive + END)
    st = os.lstat(tmp_path / "f")
    assert (st.st_uid, st.st_gid) == (3_000_000_000, 70000)


NEGATIVE_OR_BAD_NUMBERS = {
    "negative base-256 size": _header(b"f", size=_base256(-5, 12), magic=GNU),
    "PAX negative size": _pax([(b"size", b"-5")]) + _header(b"f"),
    "PAX size not a number": _pax([(b"size", b"12abc")]) + _header(b"f"),
    "PAX negative uid": _pax([(b"uid", b"-1")]) + _header(b"f"),
    "PAX gid not a number": _pax([(b"gid", b"zero")]) + _header(b"f"),
    "octal size with junk": _header(b"f", size=b"12x4"),
    "octal mode with junk": _header(b"f", mode=b"0644abc"),
    "PAX uid with a digit separator": _pax([(b"uid", b"1_000")]) + _header(b"f"),
    "PAX size with a digit separator": _pax([(b"size", b"1_0")]) + _header(b"f"),
}


@pytest.mark.parametrize("archive", NEGATIVE_OR_BAD_NUMBERS.values(), ids=NEGATIVE_OR_BAD_NUMBERS)
def test_bad_numbers_are_bad_input(archive: bytes) -> None:
    """Negative sizes or owners and non-numeric number fields are a BadInputError."""
    with pytest.raises(BadInputError):
        _entries(archive + END)


# -- names that are not UTF-8 ------------------------------------------------------

NON_UTF8 = {
    "ustar name": (b"caf\xe9.txt", "ustar"),
    "ustar prefix and name": (b"d\xff" * 60 + b"/n\xfe" * 2, "ustar"),
    "GNU long name": (b"dir\xff/" + b"n\xe9" * 80, "gnu"),
    "PAX hdrcharset=BINARY": (b"pax-\xff\xfe/file\x80", "pax"),
    "PAX long binary name": (b"p\x80" * 120, "pax"),
}


def _non_utf8_archive(raw: bytes, how: str) -> bytes:
    name = raw.decode("utf-8", "surrogateescape")
    if how == "ustar":
        return _tarfile(_info(name, data=b"bytes"), fmt=tarfile.USTAR_FORMAT)
    if how == "gnu":
        archive = _tarfile(_info(name, data=b"bytes"), fmt=tarfile.GNU_FORMAT)
        assert b"././@LongLink" in archive
        return archive
    archive = _tarfile(_info(name, data=b"bytes"), fmt=tarfile.PAX_FORMAT)
    assert b"hdrcharset=BINARY" in archive
    return archive


@pytest.mark.parametrize(("raw", "how"), NON_UTF8.values(), ids=NON_UTF8)
def test_non_utf8_names_keep_their_bytes(tmp_path: Path, raw: bytes, how: str) -> None:
    """A name that is not UTF-8 decodes to surrogates of its bytes and lands with those bytes."""
    archive = _non_utf8_archive(raw, how)
    entry = _only(archive)
    assert _raw(entry.name) == raw
    _apply(tmp_path, archive)
    *parents, base = raw.split(b"/")
    where = os.fsencode(tmp_path)
    for part in parents:
        assert part in os.listdir(where)
        where = os.path.join(where, part)
    assert base in os.listdir(where)
    with open(os.path.join(where, base), "rb") as f:
        assert f.read() == b"bytes"


def test_non_utf8_pax_linkpath_keeps_its_bytes(tmp_path: Path) -> None:
    """A binary PAX linkpath is stored verbatim as the symlink target."""
    target = b"/opt/\xff\xfe/target"
    archive = (
        _pax([(b"hdrcharset", b"BINARY"), (b"linkpath", target), (b"path", b"ln\x81")])
        + _member(b"ln", typeflag=b"2")
        + END
    )
    entry = _only(archive)
    assert (_raw(entry.name), _raw(entry.linkname)) == (b"ln\x81", target)
    _apply(tmp_path, archive)
    assert os.readlink(os.path.join(os.fsencode(tmp_path), b"ln\x81")) == target


# -- odd but valid headers -----------------------------------------------------------


@pytest.mark.parametrize("typeflag", [b"0", b"\0"], ids=["type 0", "type NUL"])
def test_old_style_directory_by_trailing_slash(tmp_path: Path, typeflag: bytes) -> None:
    """A regular-file header whose name ends in a slash is a directory (pre-POSIX tars)."""
    archive = (
        _member(b"olddir/", typeflag=typeflag, mode=0o750)
        + _member(b"olddir/child", b"c", typeflag=typeflag)
        + END
    )
    (d, _), (child, _) = _entries(archive)
    assert (d.kind, d.path, child.kind) == (Kind.DIR, "olddir", Kind.FILE)
    _apply(tmp_path, archive)
    assert (tmp_path / "olddir").is_dir()
    assert (tmp_path / "olddir").stat().st_mode & 0o7777 == 0o750
    assert (tmp_path / "olddir" / "child").read_bytes() == b"c"


def test_signed_checksum_is_accepted() -> None:
    """A header summed as signed chars (old Sun/GNU writers) is accepted."""
    header = _header(b"h\xe9\xff\xfe", checksum="signed")
    assert header != _header(b"h\xe9\xff\xfe")  # the two sums really differ
    assert _raw(_only(header + END).name) == b"h\xe9\xff\xfe"


NOT_TAR = {
    "bad checksum": _header(b"f", checksum="bad") + END,
    "text file": b"hello, this is just a text file\n" * 64,
    "random bytes": bytes((i * 37 + 11) % 256 for i in range(2048)),
    "a PNG": b"\x89PNG\r\n\x1a\n" + bytes(2040),
    "checksum field of spaces": b"x" * 148 + b" " * 8 + b"x" * 356 + END,
}


@pytest.mark.parametrize("archive", NOT_TAR.values(), ids=NOT_TAR)
def test_first_header_with_bad_checksum_says_not_a_tar(tmp_path: Path, archive: bytes) -> None:
    """A first block that fails the checksum is reported as not a tar archive."""
    with pytest.raises(BadInputError, match="not a tar archive"):
        _entries(archive)
    with pytest.raises(BadInputError, match="not a tar archive"):
        _apply(tmp_path, archive)


def test_later_header_with_bad_checksum_is_an_invalid_header() -> None:
    """A bad checksum after a good member is an invalid header, not 'not a tar'."""
    archive = _member(b"good", b"g") + _header(b"bad", checksum="bad") + END
    with pytest.raises(BadInputError, match="checksum") as info:
        _entries(archive)
    assert "not a tar archive" not in str(info.value)


BAD_PAX_RECORDS = {
    "length too long": b"99 path=x\n",
    "length too short": b"5 path=abc\n",
    "length not a number": b"ab path=x\n",
    "missing newline": b"10 path=xy",
    "newline missing at the stated end": b"11 path=xyzw\n",
    "no length at all": b"path=x\n",
    "zero length": b"0 path=x\n",
    "negative length": b"-9 path=x\n",
    "no equals sign": b"9 pathxx\n",
    "length with a digit separator": b"1_3 path=xyz\n",
    "good record then a bad one": _record(b"uid", b"1") + b"12 path=x\n",
}


@pytest.mark.parametrize("payload", BAD_PAX_RECORDS.values(), ids=BAD_PAX_RECORDS)
def test_malformed_pax_records_are_bad_input(tmp_path: Path, payload: bytes) -> None:
    """A PAX record whose length or form is wrong is a BadInputError."""
    archive = _pax(payload) + _member(b"f", b"x") + END
    with pytest.raises(BadInputError, match="PAX"):
        _entries(archive)
    with pytest.raises(BadInputError):
        _apply(tmp_path, archive)


def test_pax_record_lengths_count_their_own_digits() -> None:
    """Records whose length crosses a digit boundary (9/10, 99/100) parse exactly."""
    for size in range(1, 120):
        value = b"v" * size
        archive = _pax([(b"path", value)]) + _member(b"f") + END
        assert _only(archive).name == value.decode()


# -- end of archive and truncation ----------------------------------------------------

ENDINGS = {
    "two zero blocks then a valid member": END + _member(b"ghost", b"boo") + END,
    "two zero blocks then garbage": END + b"garbage" * 100,
    "two zero blocks then a partial block": END + b"x" * 100,
    "many zero blocks": bytes(BLOCK * 20),
    "EOF right after the data, no end blocks": b"",
    "a lone zero block then EOF": bytes(BLOCK),
}


@pytest.mark.parametrize("tail", ENDINGS.values(), ids=ENDINGS)
def test_archive_endings_that_are_accepted(tmp_path: Path, tail: bytes) -> None:
    """End-of-archive blocks end the archive whatever follows; EOF at a boundary is fine."""
    archive = _member(b"a", b"first") + _member(b"b", b"second" * 100) + tail
    assert [(e.name, d) for e, d in _entries(archive)] == [
        ("a", b"first"),
        ("b", b"second" * 100),
    ]
    _apply(tmp_path, archive)
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


LONE_ZERO_BLOCK = {
    "followed by a member": bytes(BLOCK) + _member(b"c", b"x") + END,
    "followed by junk": bytes(BLOCK) + b"junk".ljust(BLOCK, b"\1"),
}


@pytest.mark.parametrize("tail", LONE_ZERO_BLOCK.values(), ids=LONE_ZERO_BLOCK)
def test_lone_zero_block_followed_by_data_is_bad_input(tail: bytes) -> None:
    """One zero block followed by anything but a second zero block is a BadInputError."""
    archive = _member(b"a", b"first") + tail
    with pytest.raises(BadInputError, match="zero block"):
        _entries(archive)


def _truncations() -> dict[str, bytes]:
    whole = _member(b"a", b"first") + _member(b"b", b"x" * 1000)
    return {
        "partial first header": _header(b"a")[:300],
        "partial second header": _member(b"a", b"first") + _header(b"b")[:511],
        "file data cut": whole[: BLOCK * 3 + 600],
        "file data missing": _member(b"a", b"first") + _header(b"b", size=1000),
        "padding after the data cut": whole[: BLOCK * 3 + 1000 + 10],
        "PAX payload cut": _pax([(b"path", b"p" * 600)])[: BLOCK + 300],
        "PAX header with nothing after": _pax([(b"path", b"p")]),
        "GNU long name cut": _gnu_long(b"n" * 300)[: BLOCK + 100],
        "GNU long name with nothing after": _gnu_long(b"n" * 300),
    }


@pytest.mark.parametrize("archive", _truncations().values(), ids=_truncations())
def test_truncated_archives_are_bad_input(tmp_path: Path, archive: bytes) -> None:
    """A tar that stops inside a header, its data, its padding or a meta record is refused."""
    with pytest.raises(BadInputError, match="truncated"):
        _entries(archive)
    with pytest.raises(BadInputError, match="truncated"):
        _apply(tmp_path, archive)


@pytest.mark.parametrize("typeflag", [b"Z", b"M", b"N", b"A", b"?"])
def test_unsupported_typeflag_is_bad_input(tmp_path: Path, typeflag: bytes) -> None:
    """An entry type the reader does not know is a BadInputError naming the entry."""
    archive = _member(b"fine", b"ok") + _member(b"odd", b"data", typeflag=typeflag) + END
    with pytest.raises(BadInputError, match="unsupported"):
        _entries(archive)
    with pytest.raises(BadInputError, match="unsupported") as info:
        _apply(tmp_path, archive)
    assert info.value.entry == "odd"


# -- sparse files from GNU tar ---------------------------------------------------------


@dataclass(frozen=True)
class SparseFile:
    """A sparse file layout: total size and (offset, data) writes."""

    size: int
    writes: tuple[tuple[int, bytes], ...]


SPARSE = {
    "middle": SparseFile(10 * MiB, ((5 * MiB + 100, b"data"),)),
    "start-and-end": SparseFile(10 * MiB, ((0, b"head" * 2000), (10 * MiB - 4, b"tail"))),
    "hole-at-end": SparseFile(10 * MiB, ((0, b"only at the start"),)),
    "all-hole": SparseFile(10 * MiB, ()),
    "many-runs": SparseFile(
        12 * MiB, tuple((i * 400 * 1024 + 7, bytes([i + 1]) * 5000) for i in range(30))
    ),
}

SPARSE_FORMATS = {
    "gnu": ["--format=gnu", "--sparse"],
    "pax-0.0": ["--format=pax", "--sparse-version=0.0"],
    "pax-0.1": ["--format=pax", "--sparse-version=0.1"],
    "pax-1.0": ["--format=pax", "--sparse-version=1.0"],
}


@pytest.fixture(scope="module")
def sparse_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of real sparse files (on tmpfs), one per layout."""
    src = tmp_path_factory.mktemp("sparse-src")
    for name, layout in SPARSE.items():
        path = src / name
        with open(path, "wb") as f:
            f.truncate(layout.size)
            for offset, data in layout.writes:
                os.pwrite(f.fileno(), data, offset)
        st = os.stat(path)
        assert st.st_blocks * 512 < st.st_size // 10, f"{name} is not sparse on this filesystem"
    return src


@pytest.mark.parametrize("fmt", list(SPARSE_FORMATS))
def test_gnu_tar_sparse_files_round_trip_and_stay_sparse(
    tmp_path: Path, sparse_sources: Path, fmt: str
) -> None:
    """Sparse files archived by GNU tar come out byte-identical and still sparse."""
    archive = tmp_path / f"{fmt}.tar"
    subprocess.run(
        ["tar", "-C", str(sparse_sources), "-cf", str(archive), "--numeric-owner"]
        + SPARSE_FORMATS[fmt]
        + sorted(SPARSE),
        check=True,
    )
    blob = archive.read_bytes()
    assert len(blob) < 2 * MiB  # the holes were not stored
    marker = b"GNU.sparse" if fmt.startswith("pax") else None
    if marker:
        assert marker in blob
    entries = [e for e, _ in _entries(blob)]
    assert sorted(e.path for e in entries) == sorted(SPARSE)
    for entry in entries:
        assert entry.sparse is not None, entry.path
        assert entry.realsize == SPARSE[entry.path].size
    dest = tmp_path / "root"
    apply_layers(dest, [archive])
    for name, layout in SPARSE.items():
        original = (sparse_sources / name).read_bytes()
        result = dest / name
        assert result.read_bytes() == original, name
        st = result.stat()
        assert st.st_size == layout.size
        assert st.st_blocks * 512 < st.st_size // 10, f"{name}: {st.st_blocks} blocks"


# -- chunk boundaries ------------------------------------------------------------------


class _Trickle:
    """A stream that hands out its bytes in the sizes it is given, whatever is asked."""

    def __init__(self, data: bytes, sizes: list[int]):
        self._data = data
        self._sizes = sizes
        self._pos = 0
        self._turn = 0

    def read(self, n: int = -1, /) -> bytes:
        size = self._sizes[self._turn % len(self._sizes)]
        self._turn += 1
        want = size if n < 0 else min(n, size)
        out = self._data[self._pos : self._pos + want]
        self._pos += len(out)
        return out


def _read_all(stream: object) -> list[tuple[str, Kind, int, str, bytes]] | str:
    """Every entry's name, kind, mode, link and data; or the error message."""
    reader = TarReader(stream)  # type: ignore[arg-type]
    out = []
    try:
        while (entry := reader.next()) is not None:
            data = b""
            while chunk := reader.read_data(1000):
                data += chunk
            out.append((entry.path, entry.kind, entry.mode, entry.linkname, data))
    except BadInputError as e:
        return str(e)
    return out


def _mixed_archive() -> bytes:
    layer = (
        _pax([(b"path", b"pax/" + b"p" * 150), (b"mtime", b"1.5")])
        + _header(b"x", b"0", 700)
        + _pad(b"y" * 700)
        + _gnu_long(b"long/" + b"l" * 300)
        + _header(b"ignored", b"0", 3)
        + _pad(b"abc")
        + _header(b"d/", b"5")
        + _header(b"s", b"2", linkname=b"d")
        + _header(b"h", b"1", linkname=b"x")
    )
    for i in range(20):
        layer += _header(f"f{i}".encode(), b"0", i * 97) + _pad(bytes([i]) * (i * 97))
    return layer + END


@given(st.lists(st.integers(1, 1500), min_size=1, max_size=8), st.integers(0, 4))
@settings(max_examples=150, deadline=None)
def test_any_chunking_reads_the_same(sizes: list[int], cut_blocks: int) -> None:
    """Headers and data that cross the stream's chunk boundaries anywhere read the same,
    and a truncated archive fails the same way, as with the whole archive in one piece."""
    archive = _mixed_archive()
    if cut_blocks:
        archive = archive[: len(archive) - 1024 - cut_blocks * 333]
    whole = _read_all(io.BytesIO(archive))
    assert _read_all(_Trickle(archive, sizes)) == whole
    if not cut_blocks:
        assert isinstance(whole, list) and len(whole) == 25


def _sized_archive(sizes: list[int]) -> tuple[bytes, list[bytes]]:
    contents = [bytes([i + 1]) * size for i, size in enumerate(sizes)]
    layer = b"".join(
        _header(f"f{i}".encode(), b"0", len(data)) + _pad(data) for i, data in enumerate(contents)
    )
    return layer + END, contents


def _contents(stream: object, ask: int) -> list[tuple[bytes, set[type]]]:
    """Each entry's data as read in pieces of ``ask``, and the types of the pieces."""
    reader = TarReader(stream)  # type: ignore[arg-type]
    out = []
    while reader.next() is not None:
        data, types = bytearray(), set()
        while chunk := reader.read_data(ask):
            data += chunk
            types.add(type(chunk))
        out.append((bytes(data), types))
    return out


def test_big_data_reads_are_views_and_small_ones_copies() -> None:
    """A read of 16 KiB or more shares the decoded chunk instead of copying it; the
    bytes are the same either way."""
    archive, contents = _sized_archive([100_000, 3_000])
    (big, big_types), (small, small_types) = _contents(io.BytesIO(archive), 1 << 20)
    assert [big, small] == contents
    assert big_types == {memoryview}
    assert small_types == {bytes}


@given(
    st.lists(st.integers(100, 200_000), min_size=1, max_size=6),
    st.sampled_from([511, 16 << 10, (16 << 10) - 1, 100_000, 1 << 20]),
)
@settings(max_examples=80, deadline=None)
def test_any_chunking_and_read_size_give_the_same_data(sizes: list[int], ask: int) -> None:
    """Views or copies, across any chunk boundaries, the data read is the data stored."""
    archive, contents = _sized_archive([70_000, 16 << 10, (16 << 10) - 1, 300_000, 5])
    got = _contents(_Trickle(archive, sizes), ask)
    assert [data for data, _ in got] == contents
