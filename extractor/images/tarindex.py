"""One pass over an outer tar's headers: member name → where its data lies.

An image archive is opened once and indexed once; afterwards a member is
read by offset, never by scanning the archive again (ggcr's ``Opener`` reread
the tarball per layer). On a plain file the data of each member is skipped
with a seek, so indexing a 10 GB ``docker save`` reads a few KB of headers.
Only what locating members needs is decoded: names (ustar prefix, GNU long
names, PAX ``path``/``linkpath``/``size``), type, size and link target.
"""

from __future__ import annotations

import enum
import posixpath
from dataclasses import dataclass
from typing import Protocol

from ..errors import BadInputError
from ..tarstream import parse_pax

BLOCK = 512
_MAX_META = 1 << 20  # a PAX header or GNU long name larger than this is not a real archive


class MemberKind(enum.Enum):
    """What an outer-archive member is, as far as locating files goes."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    OTHER = "other"


_HEADER_ONLY = frozenset({b"1", b"2", b"3", b"4", b"5", b"6"})

_KINDS = {
    b"0": MemberKind.FILE,
    b"\0": MemberKind.FILE,
    b"7": MemberKind.FILE,
    b"1": MemberKind.HARDLINK,
    b"2": MemberKind.SYMLINK,
    b"5": MemberKind.DIR,
}


@dataclass(frozen=True, slots=True)
class Member:
    """A member of the outer tar: where its data starts in the tar stream, and its size."""

    name: str
    kind: MemberKind
    offset: int
    size: int
    linkname: str = ""


class HeaderSource(Protocol):
    """The tar stream being indexed (uncompressed view)."""

    def read(self, n: int, /) -> bytes: ...
    def skip(self, n: int, /) -> None: ...
    def tell(self) -> int: ...
    def mark(self) -> None: ...


def normalize_member(name: str) -> str | None:
    """A member name as a path from the archive's top, or ``None`` if it leaves it."""
    norm = posixpath.normpath("/" + name).lstrip("/")
    return norm or None


def _read_exact(source: HeaderSource, n: int, what: str) -> bytes:
    out = b""
    while len(out) < n:
        more = source.read(n - len(out))
        if not more:
            raise BadInputError(f"truncated archive: unexpected end of data in {what}")
        out += more
    return out


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * (len(field) - 1))) if field[0] == 0xFF else value
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    try:
        return int(digits, 8)
    except ValueError:
        raise BadInputError(f"invalid tar header: bad number {digits!r}") from None


def _cstr(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _check(block: bytes, first: bool) -> None:
    try:
        stored = _number(block[148:156])
    except BadInputError:
        stored = -1
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b > 127)
    if stored not in (unsigned, signed):
        what = "not a tar archive" if first else "corrupt archive"
        raise BadInputError(f"{what}: header checksum mismatch")


def _read_block(source: HeaderSource) -> bytes | None:
    block = source.read(BLOCK)
    while block and len(block) < BLOCK:
        more = source.read(BLOCK - len(block))
        if not more:
            raise BadInputError("truncated archive: partial header block")
        block += more
    if not block or block == bytes(BLOCK):
        return None  # end-of-archive marker (or EOF, which tar tolerates too)
    return block


class _Header:
    """The next member's header, extended headers (PAX, GNU long names) folded in."""

    def __init__(self, source: HeaderSource):
        self._source = source
        self._first = True

    def next(self) -> tuple[str, MemberKind, int, str] | None:
        """(name, kind, data size, link target) of the next member, or ``None`` at the end."""
        pax: dict[str, bytes] = {}
        long_name: str | None = None
        long_link: str | None = None
        while (block := _read_block(self._source)) is not None:
            _check(block, self._first)
            self._first = False
            typeflag = block[156:157]
            size = _number(block[124:136])
            if size < 0:
                raise BadInputError(f"invalid tar header: negative size {size}")
            if typeflag in (b"x", b"g", b"L", b"K"):
                if size > _MAX_META:
                    raise BadInputError(f"tar extended header of {size} bytes is too large")
                padded = size + (-size % BLOCK)
                payload = _read_exact(self._source, padded, "extended header")[:size]
                if typeflag == b"x":
                    pax.update(parse_pax(payload))
                elif typeflag == b"L":
                    long_name = _cstr(payload)
                elif typeflag == b"K":
                    long_link = _cstr(payload)
                continue  # global (g) records name no member: ignored
            name = long_name if long_name is not None else _cstr(block[0:100])
            if long_name is None and block[257:263] == b"ustar\0" and block[345] != 0:
                name = _cstr(block[345:500]) + "/" + name
            link = long_link if long_link is not None else _cstr(block[157:257])
            if "path" in pax:
                name = pax["path"].decode("utf-8", "surrogateescape")
            if "linkpath" in pax:
                link = pax["linkpath"].decode("utf-8", "surrogateescape")
            return (
                name,
                _KINDS.get(typeflag, MemberKind.OTHER),
                _data_size(typeflag, size, pax),
                link,
            )
        return None


def _data_size(typeflag: bytes, size: int, pax: dict[str, bytes]) -> int:
    if typeflag in _HEADER_ONLY:
        return 0  # links, directories and nodes carry no data whatever the size field says
    if "size" not in pax:
        return size
    try:
        size = int(pax["size"])
    except ValueError:
        raise BadInputError("invalid PAX size record") from None
    if size < 0:
        raise BadInputError(f"invalid PAX size record: negative size {size}")
    return size


def index_members(
    source: HeaderSource, keep: int, keep_total: int
) -> tuple[dict[str, Member], dict[str, bytes]]:
    """Index every member; also return the data of regular files up to ``keep`` bytes each.

    Keeping small members (manifests, configs, empty layers) costs nothing on
    a compressed archive, whose data must be decompressed anyway, and saves
    going back for them. ``keep_total`` bounds the memory this may take.
    Later members with the same name replace earlier ones, as tar does.
    """
    members: dict[str, Member] = {}
    kept: dict[str, bytes] = {}
    total = 0
    headers = _Header(source)
    while True:
        source.mark()
        header = headers.next()
        if header is None:
            return members, kept
        name, kind, size, link = header
        padded = size + (-size % BLOCK)
        norm = normalize_member(name)
        if norm is not None:
            members[norm] = Member(norm, kind, source.tell(), size, link)
            kept.pop(norm, None)
        if norm and kind is MemberKind.FILE and size <= keep and total + size <= keep_total:
            kept[norm] = _read_exact(source, padded, name)[:size]
            total += size
        else:
            source.skip(padded)
