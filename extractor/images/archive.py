"""An image tarball (``docker save``, OCI archive), plain or compressed, read in place.

The archive is opened once and indexed once (``tarindex``); members are then
read by offset through the archive's ``seekable`` source. Nothing is
extracted to disk and nothing large is held in memory: a layer comes out as
a stream limited to its member, in bounded reads.

``docker save`` writes a repeated layer as a symlink ``<id>/layer.tar ->
../<other>/layer.tar`` (and some tools as a hardlink member). Links are
followed inside the archive only: an absolute target, a target above the
archive's top, a missing target or a cycle is a ``BadInputError``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, BinaryIO

from ..errors import BadInputError, NotFoundError, OperationalError
from .jsondoc import MAX_JSON
from .seekable import GZIP_MAGIC, ZSTD_MAGIC, GzipSource, PlainSource, ZstdSource
from .store import Opener, bytes_opener, member_path
from .tarindex import Member, MemberKind, index_members

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MAX_LINKS = 40  # like the kernel's limit on symlinks followed in one lookup

# Members up to KEEP bytes are kept in memory while a *compressed* archive is
# indexed (manifests, configs and empty layers: all tiny), at most KEEP_TOTAL
# in all, so that reading them afterwards never sends the decompressor back.
KEEP = 1 << 20
KEEP_TOTAL = 16 << 20

Source = PlainSource | GzipSource | ZstdSource

_OTHER_MAGIC = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
}


class _MemberRaw(io.RawIOBase):
    """The bytes of one member, read through the shared source at its offset."""

    def __init__(self, store: TarStore, member: Member, name: str):
        self._store = store
        self._member = member
        self._done = 0
        self.name = name  # what the caller asked for (the link, not its target), for labels

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._member.size - self._done)
        if want <= 0:
            return 0
        source = self._store.source()
        source.seek(self._member.offset + self._done)
        data = source.read(want)
        if not data:
            raise BadInputError(f"truncated archive: {self._member.name} is cut short")
        view[: len(data)] = data
        self._done += len(data)
        return len(data)


class TarStore:
    """The members of an image tarball, found by path; see the module docstring."""

    def __init__(self, path: str):
        self.label = path
        self.concurrent = False
        try:
            self._file: BinaryIO | None = open(path, "rb", buffering=0)  # noqa: SIM115
        except FileNotFoundError:
            raise NotFoundError(f"no such file: {path}") from None
        except OSError as e:
            raise OperationalError(f"cannot open {path}: {e.strerror}") from None
        try:
            self._source = self._open_source(self._file)
            keep = 0 if isinstance(self._source, PlainSource) else KEEP
            self._members, self._kept = index_members(self._source, keep, KEEP_TOTAL)
        except BaseException:
            self.close()
            raise
        self.compression = self._source.compression

    @staticmethod
    def _open_source(f: BinaryIO) -> Source:
        head = f.read(6)
        f.seek(0)
        if head.startswith(GZIP_MAGIC):
            return GzipSource(f)
        # zstd frames, or a skippable frame (magic 0x184D2A5?) in front of them.
        if head.startswith(ZSTD_MAGIC) or (head[1:4] == b"\x2a\x4d\x18" and head[0] >> 4 == 5):
            return ZstdSource(f)
        for magic, name in _OTHER_MAGIC.items():
            if head.startswith(magic):
                raise BadInputError(f"{name}-compressed archives are not supported; decompress it")
        return PlainSource(f, os.fstat(f.fileno()).st_size)

    def source(self) -> Source:
        """The shared tar stream (``OperationalError`` once the store is closed)."""
        if self._file is None:
            raise OperationalError(f"{self.label}: the image was closed")
        return self._source

    def resolve(self, name: str) -> Member:
        """The regular-file member ``name`` designates, following links inside the archive."""
        pending = member_path(name, "path").split("/")
        done: list[str] = []
        hops = 0
        via: str | None = None  # the last link followed, for messages
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    raise BadInputError(f"link {via} points outside the archive")
                done.pop()
                continue
            done.append(part)
            member = self._members.get("/".join(done))
            if member is None or member.kind not in (MemberKind.SYMLINK, MemberKind.HARDLINK):
                continue
            if member.kind is MemberKind.HARDLINK and pending:
                continue  # a hardlink is never a directory; the lookup fails below
            hops += 1
            if hops > MAX_LINKS:
                raise BadInputError(f"link cycle (more than {MAX_LINKS} links) at {via}")
            via = f"{member.name} -> {member.linkname}"
            if member.linkname.startswith("/") and member.kind is MemberKind.SYMLINK:
                raise BadInputError(f"link {via} is absolute, outside the archive")
            if not member.linkname:
                raise BadInputError(f"link {member.name} has no target")
            if member.kind is MemberKind.HARDLINK:
                done = []  # hardlink targets are member names, from the top
                target = member.linkname.lstrip("/")
            else:
                done.pop()  # symlink targets are relative to the link's directory
                target = member.linkname
            pending = target.split("/") + pending
        final = self._members.get("/".join(done))
        if final is None:
            if via is not None:
                raise BadInputError(f"link {via} points to a file not in the archive")
            raise NotFoundError(f"{name} is not in this archive")
        if final.kind is not MemberKind.FILE:
            raise BadInputError(f"{name} is a {final.kind.value} in the archive, not a file")
        return final

    def exists(self, name: str) -> bool:
        try:
            self.resolve(name)
        except NotFoundError:
            return False
        return True

    def size(self, name: str) -> int:
        return self.resolve(name).size

    def read(self, name: str, limit: int = MAX_JSON) -> bytes:
        member = self.resolve(name)
        if member.size > limit:
            raise BadInputError(f"{name} is {member.size} bytes, more than the {limit} allowed")
        with self.opener(name)() as f:
            return f.read()

    def opener(self, name: str) -> Opener:
        member = self.resolve(name)
        kept = self._kept.get(member.name)
        if kept is not None:
            return bytes_opener(kept, name)
        return lambda: io.BufferedReader(_MemberRaw(self, member, name), 1 << 16)

    def names(self) -> Iterable[str]:
        return [m.name for m in self._members.values() if m.kind is not MemberKind.DIR]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
