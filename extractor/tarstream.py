"""A lean, strict, streaming tar reader: headers in, ``Entry`` records out.

It reads ustar, GNU (long names, long link names, old sparse) and PAX
(per-file and global records, xattrs, sparse 0.0/0.1/1.0) headers, verifies
every checksum, and turns every malformed or truncated header into a
``BadInputError``. It never extracts anything: the data of the current entry
is read with ``read_data``. Python's ``tarfile`` is not used because it takes
a corrupt header after the first as the end of the archive, and it is four
times slower per header.
"""

from __future__ import annotations

import base64
import operator
import os
import struct
import zlib
from typing import Final

from mypy_extensions import i64

from .decode import CHUNK, Readable
from .errors import BadInputError
from .limits import Limits
from .model import DIR, FILE, HARDLINK, SYMLINK, Entry, Kind
from .paths import normalize

BLOCK = 512
# Data reads of at least this many bytes are views, not copies: below it, making
# the view costs more than copying.
_VIEW_MIN = 16 << 10
ZERO_BLOCK = bytes(BLOCK)
# name, mode, uid, gid, size, mtime, chksum, typeflag, linkname, magic; the
# rest (devices, prefix, GNU sparse) is sliced from the block when needed.
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s6s")

_KINDS = {
    b"0": Kind.FILE,
    b"\0": Kind.FILE,
    b"7": Kind.FILE,  # contiguous file: a plain file everywhere that matters
    b"1": Kind.HARDLINK,
    b"2": Kind.SYMLINK,
    b"3": Kind.CHAR,
    b"4": Kind.BLOCK,
    b"5": Kind.DIR,
    b"6": Kind.FIFO,
    b"D": Kind.DIR,  # GNU dumpdir: a directory plus a listing we ignore
    b"S": Kind.FILE,  # GNU old sparse
}


# Compared by identity: ``kind in frozenset(...)`` hashes an enum in Python.
_CHAR, _BLOCK = Kind.CHAR, Kind.BLOCK


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _cstr(field: bytes) -> bytes:
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


_NUL_TO_SPACE = bytes.maketrans(b"\0", b" ")


def _plain_numbers(block: bytes) -> tuple[int, int, int, int, int, int] | None:
    """Mode, uid, gid, size, mtime and the stored checksum when all six are plain
    octal; else ``None``.

    ``int`` skips spaces, so NULs become spaces and one call a field does;
    anything unusual (base-256, garbage after a NUL, an empty field) is left
    to ``_number`` field by field.
    """
    region = block[100:156]
    if region.isascii():
        t = region.translate(_NUL_TO_SPACE)
        try:
            return (
                int(t[:8], 8),
                int(t[8:16], 8),
                int(t[16:24], 8),
                int(t[24:36], 8),
                int(t[36:48], 8),
                int(t[48:], 8),
            )
        except ValueError:
            pass
    return None


def _octal(field: bytes, what: str) -> int:
    """``_number`` with the common case (plain octal) first."""
    if field[0] < 0x80:
        try:
            return int(field.split(b"\0", 1)[0] or b"0", 8)
        except ValueError:
            pass  # padding only, or not a number: _number tells which
    return _number(field, what)


def _number(field: bytes, what: str) -> int:
    """An octal ASCII number, or GNU base-256 when the high bit is set."""
    if field and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:  # negative, two's complement
            value -= 1 << (8 * (len(field) - 1))
        return value
    end = field.find(b"\0")
    digits = field if end < 0 else field[:end]
    try:
        return int(digits, 8) if digits.strip() else 0  # int() skips the padding spaces
    except ValueError:
        raise BadInputError(f"invalid tar header: bad {what} field {digits!r}") from None


def _is_digits(text: str) -> bool:
    # int() also takes "1_000", " 7" and non-ASCII digits; tar numbers are plain ASCII.
    return text.isascii() and text.isdigit()


def _decimal(value: str, what: str) -> int:
    digits = value[1:] if value.startswith("-") else value
    if not _is_digits(digits):
        raise BadInputError(f"invalid PAX record: {what}={value!r}")
    return int(value)


def _pax_time_ns(value: str) -> int:
    sec, dot, frac = value.partition(".")
    whole = sec[1:] if sec.startswith("-") else sec
    if not _is_digits(whole) or (dot and not _is_digits(frac)):
        raise BadInputError(f"invalid PAX time {value!r}")
    ns = _to_ns(int(sec))
    if frac:
        sign = -1 if sec.startswith("-") else 1
        ns += sign * int(frac[:9].ljust(9, "0"))
    return ns


# Big integers are multiplied through ``operator.mul``, not ``*``: CPython runs signal
# handlers inside a big-int multiplication, and compiled by mypyc a ``*`` whose
# handler raised (SIGTERM mid-entry) aborts with "fatal: out of memory" instead
# of unwinding. A call reports the handler's exception like any other.
_NS = 1_000_000_000


# Below this (the year 2106) a time in nanoseconds fits in 63 bits, so a
# 64-bit multiplication (``i64``, compiled) is exact and needs no big int.
_SMALL_SECONDS: Final = 1 << 32


def _to_ns(seconds: int) -> int:
    if 0 <= seconds < _SMALL_SECONDS:
        word: i64 = seconds
        return word * 1_000_000_000
    ns: int = operator.mul(seconds, _NS)
    return ns


_ID_LIMIT = 1 << 32  # uid_t, gid_t and device numbers are 32 bits
_TIME_LIMIT = 1 << 63  # nanoseconds in a signed 64-bit timespec
_SIZE_LIMIT = 1 << 63  # off_t


def _check_ranges(entry: Entry) -> None:
    """Refuse numbers no filesystem call can take (base-256 and PAX allow any size)."""
    if (
        0 <= entry.uid < _ID_LIMIT
        and 0 <= entry.gid < _ID_LIMIT
        and entry.devmajor == entry.devminor == 0
        and -_TIME_LIMIT < entry.mtime_ns < _TIME_LIMIT
        and entry.atime_ns is None
        and 0 <= entry.size <= entry.realsize < _SIZE_LIMIT
    ):
        return  # the common case, checked in one go
    for what, value in (
        ("uid", entry.uid),
        ("gid", entry.gid),
        ("device major", entry.devmajor),
        ("device minor", entry.devminor),
    ):
        if not 0 <= value < _ID_LIMIT:
            raise BadInputError(f"{what} {value} is out of range")
    for what, value in (("mtime", entry.mtime_ns), ("atime", entry.atime_ns or 0)):
        if not -_TIME_LIMIT < value < _TIME_LIMIT:
            raise BadInputError(f"{what} is out of range")
    if not 0 <= entry.realsize < _SIZE_LIMIT or not 0 <= entry.size < _SIZE_LIMIT:
        raise BadInputError("file size is out of range")


def parse_pax(data: bytes) -> list[tuple[str, bytes]]:
    """PAX records ``"%d %s=%s\\n"`` as (key, raw value) pairs, in order."""
    records: list[tuple[str, bytes]] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # NUL padding after the last record
            break
        space = data.find(b" ", pos, pos + 20)
        if space < 0:
            raise BadInputError("invalid PAX record: no length")
        if not data[pos:space].isdigit():
            raise BadInputError("invalid PAX record: bad length")
        length = int(data[pos:space])
        end = pos + length
        if length <= space - pos + 1 or end > len(data) or data[end - 1 : end] != b"\n":
            raise BadInputError("invalid PAX record: length does not match")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise BadInputError("invalid PAX record: no '='")
        records.append((key.decode("utf-8", "surrogateescape"), value))
        pos = end
    return records


class TarReader:
    """Iterate the entries of an uncompressed tar stream.

    ``next()`` returns the next ``Entry`` (or ``None`` at the end) and skips
    whatever data of the previous one was not read. ``read_data(n)`` reads the
    current entry's stored bytes. ``current`` names the last member seen, for
    error messages. ``limits`` bounds paths, extended headers, the number of
    entries and the bytes read.
    """

    def __init__(self, stream: Readable, limits: Limits | None = None):
        limits = limits or Limits()
        self._stream = stream
        self._max_path = limits.path_bytes
        self._quarter_path = limits.path_bytes // 4  # a str longer than this may be too long
        self._max_meta = limits.header_bytes
        self._max_bytes = limits.layer_bytes if limits.layer_bytes is not None else 1 << 63
        self._max_entries = limits.entries
        self._entries = 0
        self._data = b""  # the chunk being read, from ``_pos`` on
        self._pos = 0
        self._remaining = 0  # unread data bytes of the current entry
        self._padding = 0
        self._global: dict[str, bytes] = {}
        self._offset = 0
        self.current: str | None = None

    # -- raw reading ---------------------------------------------------------

    def _take(self, n: int, what: str, eof_ok: bool = False) -> bytes | None:
        """The next ``n`` bytes; ``None`` if ``eof_ok`` and the stream has ended."""
        data, pos = self._data, self._pos
        if pos + n <= len(data):
            self._pos = pos + n
            self._offset += n
            return data[pos : pos + n]
        # Across chunks: copy just the n bytes, and keep reading the last chunk
        # in place (joining whole chunks would copy every byte of the layer).
        parts = [data[pos:]]
        have = len(parts[0])
        while have < n:
            # A whole decoded chunk at a time: LayerStream hands it over uncopied.
            more = self._stream.read(max(n - have, CHUNK))
            if not more:
                self._data, self._pos = b"", 0
                if eof_ok and not have:
                    return None
                if eof_ok:
                    raise BadInputError("truncated tar: partial header block")
                raise BadInputError(f"truncated tar: unexpected end of data in {what}")
            parts.append(more)
            have += len(more)
        last = parts[-1]
        cut = len(last) - (have - n)
        parts[-1] = last[:cut]
        self._data, self._pos = last, cut
        self._offset += n
        return b"".join(parts)

    def _read_exact(self, n: int, what: str) -> bytes:
        out = self._take(n, what)
        assert out is not None
        return out

    def _read_block_or_eof(self) -> bytes | None:
        return self._take(BLOCK, "header", eof_ok=True)

    def read_data(self, n: int) -> bytes | memoryview:
        """Up to ``n`` bytes of the current entry's stored data; ``b""`` when done.

        Reads of ``_VIEW_MIN`` bytes or more are views into the decoded chunk
        (which they keep alive); smaller ones are copies, which cost less.
        """
        n = min(n, self._remaining)
        if n <= 0:
            return b""
        data, pos = self._data, self._pos
        if pos >= len(data):
            # A whole decoded chunk at a time, uncopied (LayerStream hands it over).
            data, pos = self._stream.read(CHUNK), 0
            if not data:
                raise BadInputError("truncated tar: unexpected end of data in file content")
            self._data = data
        end = min(pos + n, len(data))
        out: bytes | memoryview
        if pos == 0 and end == len(data):
            out = data
        elif end - pos < _VIEW_MIN:
            out = data[pos:end]
        else:
            out = memoryview(data)[pos:end]
        self._pos = end
        self._remaining -= end - pos
        self._offset += end - pos
        if self._offset > self._max_bytes:
            self._too_big()
        return out

    def _too_big(self) -> None:
        raise BadInputError(
            f"layer is larger than {self._max_bytes} bytes uncompressed (--max-layer-bytes)"
        )

    def _skip_rest(self) -> None:
        while self._remaining:
            self.read_data(min(self._remaining, CHUNK))
        if self._padding:
            self._read_exact(self._padding, "padding")
            self._padding = 0

    def _payload(self, size: int, what: str) -> bytes:
        if size > self._max_meta:
            raise BadInputError(
                f"{what} of {size} bytes is larger than the {self._max_meta} allowed"
            )
        data = self._read_exact(size, what)
        pad = -size % BLOCK
        if pad:
            self._read_exact(pad, "padding")
        return data

    # -- headers -------------------------------------------------------------

    def next(self) -> Entry | None:
        """The next entry, or ``None`` after the end-of-archive marker or at EOF."""
        if self._remaining or self._padding:
            self._skip_rest()  # a truncation here still blames the previous entry
        if self._offset > self._max_bytes:
            self._too_big()
        self.current = None
        pax: dict[str, bytes] = {}
        sparse_runs: list[int] = []  # PAX 0.0 offset/numbytes pairs, flattened
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            data, pos = self._data, self._pos
            if len(data) - pos >= BLOCK:  # _take's fast path, inline: 0.5 µs an entry
                block: bytes | None = data[pos : pos + BLOCK]
                self._pos = pos + BLOCK
                self._offset += BLOCK
            else:
                block = self._read_block_or_eof()
            if block is None:
                if pax or long_name is not None or long_link is not None:
                    raise BadInputError("truncated tar: extended header with no entry after it")
                return None
            if block == ZERO_BLOCK:
                second = self._read_block_or_eof()
                if second is not None and second != ZERO_BLOCK:
                    raise BadInputError("invalid tar: a zero block followed by more data")
                return None
            fields = _HEADER.unpack_from(block)
            numbers = _plain_numbers(block)
            self._check(block, fields[6], numbers[5] if numbers is not None else -1)
            typeflag = fields[7]
            size = numbers[3] if numbers is not None else _octal(fields[4], "size")
            if size < 0:
                raise BadInputError(f"invalid tar header: negative size {size}")
            # Member types first: one lookup tells most entries from extended headers.
            kind = _KINDS.get(typeflag)
            if kind is None and typeflag in b"xXgLKV":
                if typeflag == b"V":  # volume label: nothing to extract
                    self._remaining, self._padding = size, -size % BLOCK
                    self._skip_rest()
                    continue
                if typeflag == b"L":
                    long_name = _cstr(self._payload(size, "GNU long name"))
                    continue
                if typeflag == b"K":
                    long_link = _cstr(self._payload(size, "GNU long link name"))
                    continue
                records = parse_pax(self._payload(size, "PAX header"))
                if typeflag == b"g":
                    self._global.update(records)
                    continue
                for key, value in records:
                    if key in ("GNU.sparse.offset", "GNU.sparse.numbytes"):
                        sparse_runs.append(_decimal(_text(value), key))
                    pax[key] = value
                continue
            entry = self._entry(
                block,
                fields,
                kind,
                numbers,
                size,
                {**self._global, **pax} if self._global else pax,
                sparse_runs,
                long_name,
                long_link,
            )
            self._entries += 1
            if self._entries > self._max_entries:
                raise BadInputError(
                    f"more than {self._max_entries} entries in one layer (--max-entries)"
                )
            return entry

    def _check(self, block: bytes, field: bytes, stored: int) -> None:
        """Verify the header checksum ``field`` (``stored``: its value if already
        parsed, else -1)."""
        if block.isascii():
            # Adler-32's low half is 1 + the byte sum mod 65521, and an ASCII
            # block sums to less than that: exact sums, computed in C. The
            # checksum field counts as eight spaces.
            whole = zlib.adler32(block) & 0xFFFF
            unsigned = whole - (zlib.adler32(field) & 0xFFFF) + 8 * 32
        else:
            unsigned = sum(block) - sum(block[148:156]) + 8 * 32
        if stored < 0:
            try:
                stored = _octal(field, "checksum")
            except BadInputError:
                stored = -1
        if stored != unsigned:
            # Some old writers summed signed chars.
            high = sum(1 for b in block[:148] + block[156:] if b > 127)
            if stored != unsigned - 256 * high:
                what = "not a tar archive" if self._offset == BLOCK else "invalid tar header"
                raise BadInputError(f"{what}: header checksum mismatch")

    def _entry(
        self,
        block: bytes,
        fields: tuple[bytes, ...],
        kind: Kind | None,
        numbers: tuple[int, int, int, int, int, int] | None,
        size: int,
        pax: dict[str, bytes],
        sparse_runs: list[int],
        long_name: bytes | None,
        long_link: bytes | None,
    ) -> Entry:
        typeflag = fields[7]
        if long_name is not None:
            name_raw = long_name
        else:
            name_raw = _cstr(fields[0])
            if fields[9] == b"ustar\0" and block[345] != 0:
                name_raw = _cstr(block[345:500]) + b"/" + name_raw
        name = _text(name_raw)
        if pax and "path" in pax:
            name = _text(pax["path"])
        self.current = name
        if kind is None:
            printable = typeflag.decode("latin-1")
            raise BadInputError(f"unsupported tar entry type {printable!r}")
        if kind is FILE and name.endswith("/") and typeflag in b"0\0":
            kind = DIR  # old tars mark directories only by the slash
        if numbers is not None:
            mode, uid, gid, _, mtime, _ = numbers
        else:
            mode = _octal(fields[1], "mode")
            uid = _octal(fields[2], "uid")
            gid = _octal(fields[3], "gid")
            mtime = _octal(fields[5], "mtime")
        entry = Entry(name, normalize(name), kind, mode & 0o7777, uid, gid, _to_ns(mtime))
        if kind is HARDLINK or kind is SYMLINK:
            linkname = _text(long_link if long_link is not None else _cstr(fields[8]))
            if pax and "linkpath" in pax:
                linkname = _text(pax["linkpath"])
            entry.linkname = normalize(linkname) if kind is HARDLINK else linkname
        elif kind is _CHAR or kind is _BLOCK:
            entry.devmajor = _number(block[329:337], "devmajor")
            entry.devminor = _number(block[337:345], "devminor")
        if pax:
            self._apply_pax(entry, pax)
        if kind is FILE:
            stored = size
            if pax and "size" in pax:
                stored = _decimal(_text(pax["size"]), "size")
                if stored < 0:
                    raise BadInputError(f"invalid PAX record: negative size {stored}")
            self._remaining, self._padding = stored, -stored % BLOCK
            entry.size = stored
            entry.realsize = stored
            if typeflag == b"S":
                self._gnu_sparse(entry, block)
            elif sparse_runs or (pax and ("GNU.sparse.major" in pax or "GNU.sparse.map" in pax)):
                self._pax_sparse(entry, pax, sparse_runs)
        elif typeflag == b"D":
            # GNU dumpdir: a directory with a listing as data. Other header-only
            # types carry no data whatever their size field says (as tarfile and Go).
            self._remaining, self._padding = size, -size % BLOCK
        # Plain octal fields of at most 12 digits are in range unless negative
        # (int() takes a sign) or the time is past _SMALL_SECONDS; device numbers
        # (read apart, maybe base-256) are checked unless zero. Integer compares
        # only: no enum is hashed here.
        plain = numbers is not None and not pax and typeflag != b"S"
        if not (
            plain
            and uid >= 0
            and gid >= 0
            and 0 <= mtime < _SMALL_SECONDS
            and entry.devmajor == 0
            and entry.devminor == 0
        ):
            _check_ranges(entry)
        if len(entry.path) > self._quarter_path or len(entry.linkname) > self._quarter_path:
            limit = self._max_path
            for what, value in (("path", entry.path), ("hardlink target", entry.linkname)):
                if len(os.fsencode(value)) > limit:
                    raise BadInputError(f"{what} is longer than {limit} bytes")
        return entry

    def _apply_pax(self, entry: Entry, pax: dict[str, bytes]) -> None:
        for key, value in pax.items():
            if key == "uid":
                entry.uid = _decimal(_text(value), key)
            elif key == "gid":
                entry.gid = _decimal(_text(value), key)
            elif key == "mtime":
                entry.mtime_ns = _pax_time_ns(_text(value))
            elif key == "atime":
                entry.atime_ns = _pax_time_ns(_text(value))
            elif key.startswith("SCHILY.xattr."):
                entry.xattrs[key[len("SCHILY.xattr.") :]] = value
            elif key.startswith("LIBARCHIVE.xattr."):
                import urllib.parse  # rare, and 3 ms of start-up for every run

                xname = urllib.parse.unquote(key[len("LIBARCHIVE.xattr.") :])
                try:
                    entry.xattrs[xname] = base64.b64decode(value + b"==", validate=False)
                except ValueError:
                    raise BadInputError(f"invalid PAX xattr record {key}") from None
        if entry.uid < 0 or entry.gid < 0:
            raise BadInputError(f"invalid owner {entry.uid}:{entry.gid}")

    # -- sparse files --------------------------------------------------------

    def _gnu_sparse(self, entry: Entry, block: bytes) -> None:
        runs: list[tuple[int, int]] = []

        def take(area: bytes, count: int) -> None:
            for i in range(count):
                off = _number(area[i * 24 : i * 24 + 12], "sparse offset")
                num = _number(area[i * 24 + 12 : i * 24 + 24], "sparse length")
                if off or num:
                    runs.append((off, num))

        take(block[386:482], 4)
        extended = block[482]
        while extended:
            ext = self._read_exact(BLOCK, "sparse header")
            take(ext[:504], 21)
            extended = ext[504]
        entry.sparse = runs
        entry.realsize = _number(block[483:495], "sparse real size")
        self._check_runs(entry)

    def _pax_sparse(self, entry: Entry, pax: dict[str, bytes], flat: list[int]) -> None:
        if "GNU.sparse.name" in pax:
            entry.name = _text(pax["GNU.sparse.name"])
            entry.path = normalize(entry.name)
            self.current = entry.name
        real = pax.get("GNU.sparse.realsize", pax.get("GNU.sparse.size"))
        if real is not None:
            entry.realsize = _decimal(_text(real), "GNU.sparse.realsize")
        if _text(pax.get("GNU.sparse.major", b"0")) == "1":
            flat = self._sparse_map_from_data()
        elif "GNU.sparse.map" in pax:
            text = _text(pax["GNU.sparse.map"])
            flat = [_decimal(v, "GNU.sparse.map") for v in text.split(",")] if text else []
        if len(flat) % 2:
            raise BadInputError("invalid sparse map: odd number of values")
        entry.sparse = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        entry.size = self._remaining
        self._check_runs(entry)

    def _sparse_map_from_data(self) -> list[int]:
        # PAX 1.0: the map is decimal lines at the start of the data, padded to a block.
        text = b""
        values: list[int] = []
        count: int | None = None
        while count is None or len(values) < operator.mul(2, count):
            while b"\n" not in text:
                if self._remaining < BLOCK or len(text) > self._max_meta:
                    raise BadInputError("invalid sparse map: truncated or too large")
                text += self._read_exact(BLOCK, "sparse map")
                self._remaining -= BLOCK
            line, _, text = text.partition(b"\n")
            value = _decimal(_text(line), "sparse map")
            if count is None:
                count = value
            else:
                values.append(value)
        return values

    @staticmethod
    def _check_runs(entry: Entry) -> None:
        assert entry.sparse is not None
        end = 0
        total = 0
        for off, num in entry.sparse:
            if off < end or num < 0:
                raise BadInputError("invalid sparse map: runs overlap or go backwards")
            end = off + num
            total += num
        if end > entry.realsize or total != entry.size:
            raise BadInputError("invalid sparse map: does not match the stored size")
