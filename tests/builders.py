"""Build layer tarballs in memory, one entry per call, for the tests.

    layer = Layer().dir("etc").file("etc/passwd", b"root:x:0:0\\n").whiteout("etc/shadow")
    path = layer.write(tmp_path / "l1.tar.gz", "gzip")

Entries keep the order they are added in; nothing is sorted or deduplicated,
so tests can build the odd layers real tools write.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import zstandard

MTIME = 1_600_000_000


class Layer:
    """A tar archive built entry by entry (PAX format unless told otherwise)."""

    def __init__(self, fmt: int = tarfile.PAX_FORMAT):
        self.format = fmt
        self.members: list[tuple[tarfile.TarInfo, bytes | None]] = []

    def _info(
        self,
        name: str,
        kind: bytes,
        mode: int,
        uid: int,
        gid: int,
        mtime: float,
        xattrs: dict[str, bytes] | None,
    ) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.uname = info.gname = ""
        info.mtime = mtime
        if xattrs:
            info.pax_headers = {
                f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()
            }
        return info

    def add(self, info: tarfile.TarInfo, data: bytes | None = None) -> Layer:
        """Add a hand-made TarInfo (and data for regular files)."""
        self.members.append((info, data))
        return self

    def file(
        self,
        name: str,
        data: bytes = b"",
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
        mtime: float = MTIME,
        xattrs: dict[str, bytes] | None = None,
    ) -> Layer:
        """A regular file with ``data``."""
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid, mtime, xattrs)
        info.size = len(data)
        return self.add(info, data)

    def dir(
        self,
        name: str,
        mode: int = 0o755,
        uid: int = 0,
        gid: int = 0,
        mtime: float = MTIME,
        xattrs: dict[str, bytes] | None = None,
    ) -> Layer:
        """A directory."""
        return self.add(self._info(name, tarfile.DIRTYPE, mode, uid, gid, mtime, xattrs))

    def symlink(
        self, name: str, target: str, uid: int = 0, gid: int = 0, mtime: float = MTIME
    ) -> Layer:
        """A symlink whose target is stored verbatim."""
        info = self._info(name, tarfile.SYMTYPE, 0o777, uid, gid, mtime, None)
        info.linkname = target
        return self.add(info)

    def hardlink(self, name: str, target: str, mtime: float = MTIME) -> Layer:
        """A hardlink to ``target`` (a member name, as tar stores it)."""
        info = self._info(name, tarfile.LNKTYPE, 0o644, 0, 0, mtime, None)
        info.linkname = target
        return self.add(info)

    def fifo(
        self, name: str, mode: int = 0o644, uid: int = 0, gid: int = 0, mtime: float = MTIME
    ) -> Layer:
        """A named pipe."""
        return self.add(self._info(name, tarfile.FIFOTYPE, mode, uid, gid, mtime, None))

    def device(
        self,
        name: str,
        kind: str = "char",
        major: int = 1,
        minor: int = 3,
        mode: int = 0o666,
        uid: int = 0,
        gid: int = 0,
        mtime: float = MTIME,
    ) -> Layer:
        """A character (``kind="char"``) or block device node."""
        ttype = tarfile.CHRTYPE if kind == "char" else tarfile.BLKTYPE
        info = self._info(name, ttype, mode, uid, gid, mtime, None)
        info.devmajor, info.devminor = major, minor
        return self.add(info)

    def whiteout(self, path: str) -> Layer:
        """A whiteout for ``path``: ``dir/.wh.name``."""
        head, _, base = path.rpartition("/")
        return self.file(f"{head}/.wh.{base}" if head else f".wh.{base}")

    def opaque(self, directory: str) -> Layer:
        """An opaque marker in ``directory``."""
        return self.file(f"{directory}/.wh..wh..opq" if directory else ".wh..wh..opq")

    def tar(self) -> bytes:
        """The uncompressed tar bytes."""
        buf = io.BytesIO()
        with tarfile.open(
            fileobj=buf, mode="w", format=self.format, encoding="utf-8", errors="surrogateescape"
        ) as tf:
            for info, data in self.members:
                tf.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()

    def bytes(self, compression: str = "none") -> bytes:
        """The layer blob: ``none``, ``gzip`` or ``zstd``."""
        raw = self.tar()
        if compression == "gzip":
            return gzip.compress(raw, mtime=0)
        if compression == "zstd":
            return zstandard.ZstdCompressor().compress(raw)
        return raw

    def write(self, path: str | os.PathLike[str], compression: str = "none") -> Path:
        """Write the layer blob to ``path`` and return it."""
        target = Path(path)
        target.write_bytes(self.bytes(compression))
        return target
