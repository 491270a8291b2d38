"""A minimal POSIX pax (ustar + ``x`` headers) writer whose every byte is chosen here.

Used by ``export`` for archives that must be byte-for-byte reproducible:
uname and gname are always empty, there is no atime, ctime or pid anywhere,
and a pax header is written only for what a ustar header can't hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import BinaryIO

from .errors import BadInputError

BLOCK = 512
RECORD = 20 * BLOCK
_MAX7 = 0o7777777  # largest value of an 8-byte octal field
_MAX11 = 0o77777777777  # largest value of a 12-byte octal field


def pax_record(key: bytes, value: bytes) -> bytes:
    """One ``"LEN KEY=VALUE\\n"`` record, LEN counting itself."""
    body = b" " + key + b"=" + value + b"\n"
    n = len(body)
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def ustar_header(
    name: bytes,
    typeflag: bytes,
    *,
    mode: int = 0,
    uid: int = 0,
    gid: int = 0,
    size: int = 0,
    mtime: int = 0,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
) -> bytes:
    """A 512-byte ustar header; every value must already fit its field."""
    head = (
        name[:100].ljust(100, b"\0")
        + _octal(mode, 8)
        + _octal(uid, 8)
        + _octal(gid, 8)
        + _octal(size, 12)
        + _octal(mtime, 12)
        + b" " * 8
        + typeflag
        + linkname[:100].ljust(100, b"\0")
        + b"ustar\x0000"
        + b"\0" * 64  # uname, gname: empty
        + _octal(devmajor, 8)
        + _octal(devminor, 8)
    ).ljust(BLOCK, b"\0")
    checksum = b"%06o\0 " % sum(head)
    return head[:148] + checksum + head[156:]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


class TarWriter:
    """Writes members to a binary stream, hashing and counting every byte."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> None:
        """Write raw bytes."""
        self.out.write(data)
        self.digest.update(data)
        self.size += len(data)

    def member(
        self,
        name: bytes,
        typeflag: bytes,
        *,
        mode: int,
        uid: int,
        gid: int,
        mtime: int,
        size: int = 0,
        linkname: bytes = b"",
        device: tuple[int, int] = (0, 0),
        xattrs: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """Write one header (and its pax header when ustar can't hold everything)."""
        records = []
        if len(name) > 100 or not name.isascii():
            records.append(pax_record(b"path", name))
        if len(linkname) > 100 or not linkname.isascii():
            records.append(pax_record(b"linkpath", linkname))
        if uid > _MAX7:
            records.append(pax_record(b"uid", b"%d" % uid))
        if gid > _MAX7:
            records.append(pax_record(b"gid", b"%d" % gid))
        if size > _MAX11:
            records.append(pax_record(b"size", b"%d" % size))
        if not 0 <= mtime <= _MAX11:
            records.append(pax_record(b"mtime", b"%d" % mtime))
        for key, value in xattrs:
            if b"=" in key or b"\0" in key or b"\n" in key:
                raise BadInputError(f"xattr name {key!r} can't be stored in a pax record")
            records.append(pax_record(b"SCHILY.xattr." + key, value))
        stamp = min(max(mtime, 0), _MAX11)
        if records:
            if not (_is_utf8(name) and _is_utf8(linkname)):
                records.insert(0, pax_record(b"hdrcharset", b"BINARY"))
            data = b"".join(records)
            base = name.rstrip(b"/").rpartition(b"/")[2] or b"."
            self.write(
                ustar_header(
                    b"./PaxHeaders/" + base[:80], b"x", mode=0o644, size=len(data), mtime=stamp
                )
            )
            self._data(data)
        self.write(
            ustar_header(
                name,
                typeflag,
                mode=mode,
                uid=uid if uid <= _MAX7 else 0,
                gid=gid if gid <= _MAX7 else 0,
                size=size if size <= _MAX11 else 0,
                mtime=stamp,
                linkname=linkname,
                devmajor=device[0],
                devminor=device[1],
            )
        )

    def _data(self, data: bytes) -> None:
        self.write(data)
        self.pad(len(data))

    def pad(self, length: int) -> None:
        """Zeros up to the next block boundary after ``length`` bytes of data."""
        if length % BLOCK:
            self.write(b"\0" * (BLOCK - length % BLOCK))

    def finish(self) -> None:
        """The end-of-archive marker, padded to a whole record."""
        self.write(b"\0" * (2 * BLOCK))
        if self.size % RECORD:
            self.write(b"\0" * (RECORD - self.size % RECORD))
