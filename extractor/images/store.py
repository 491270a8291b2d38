"""Where an image's files live: a directory, or the members of a tar archive.

Both kinds answer the same few questions, by a path relative to the image's
top (``manifest.json``, ``blobs/sha256/<hex>``, ``<id>/layer.tar``): does it
exist, how big is it, give me its bytes (small documents) or a stream (layers).
Paths from manifests are untrusted, so ``member_path`` normalises them and
refuses absolute ones and ``..`` before any lookup.
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
from collections.abc import Callable, Iterable
from typing import BinaryIO, Protocol

from ..errors import BadInputError, NotFoundError, OperationalError
from .jsondoc import MAX_JSON, show

Opener = Callable[[], BinaryIO]


def member_path(value: str, what: str) -> str:
    """``value`` normalised (``./a//b`` → ``a/b``), refusing paths that leave the top."""
    if not value or value.startswith("/") or "\0" in value:
        raise BadInputError(f"{what}: path {show(value)} is not relative to the image")
    norm = posixpath.normpath(value)
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise BadInputError(f"{what}: path {show(value)} points outside the image")
    return norm


class Store(Protocol):
    """Read access to an image's files by relative path."""

    label: str  # the path the user gave, for messages
    # Whether each open is a file of its own, so two members may be read at
    # once (an archive's members share one file position).
    concurrent: bool

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a regular file (after following links inside the image)."""
        ...

    def size(self, name: str) -> int:
        """The size of ``name`` in bytes (``NotFoundError`` if missing)."""
        ...

    def read(self, name: str, limit: int = MAX_JSON) -> bytes:
        """The whole content of ``name``, refused when larger than ``limit``."""
        ...

    def opener(self, name: str) -> Opener:
        """Check that ``name`` exists now and return a function that opens it later."""
        ...

    def names(self) -> Iterable[str]:
        """Every file path the store knows (for sniffing and listings)."""
        ...

    def close(self) -> None:
        """Release open files."""
        ...


class DirStore:
    """An image laid out in a directory (OCI layout, or an unpacked docker save).

    Symlinks inside the directory are followed (docker save links repeated
    layers), but the real path must stay inside the directory: a layout that
    points a blob at ``/etc/shadow`` is refused, as an archive would be.
    """

    def __init__(self, top: str):
        self.label = top
        self.concurrent = True
        self._top = os.path.realpath(top)

    def _path(self, name: str) -> str:
        full = os.path.join(self._top, member_path(name, "path"))
        real = os.path.realpath(full)
        if real != self._top and not real.startswith(self._top + os.sep):
            raise BadInputError(f"{name}: symlink points outside the image directory")
        return real

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def _stat_file(self, name: str) -> os.stat_result:
        path = self._path(name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise NotFoundError(f"{name} is not in this image") from None
        except OSError as e:
            raise self._error(name, e) from None
        if not os.path.isfile(path):
            raise BadInputError(f"{name} is not a regular file")
        return st

    @staticmethod
    def _error(name: str, e: OSError) -> Exception:
        if e.errno == errno.ELOOP:
            return BadInputError(f"{name}: symlink cycle")
        return OperationalError(f"cannot read {name}: {e.strerror}")

    def size(self, name: str) -> int:
        return self._stat_file(name).st_size

    def read(self, name: str, limit: int = MAX_JSON) -> bytes:
        size = self.size(name)
        if size > limit:
            raise BadInputError(f"{name} is {size} bytes, more than the {limit} allowed")
        try:
            with open(self._path(name), "rb") as f:
                return f.read(limit + 1)[:limit]
        except OSError as e:
            raise self._error(name, e) from None

    def opener(self, name: str) -> Opener:
        self._stat_file(name)
        path = self._path(name)

        def open_blob() -> BinaryIO:
            try:
                return open(path, "rb")
            except OSError as e:
                raise self._error(name, e) from None

        return open_blob

    def names(self) -> Iterable[str]:
        for dirpath, _dirs, files in os.walk(self._top):
            rel = os.path.relpath(dirpath, self._top)
            for f in files:
                yield f if rel == "." else f"{rel}/{f}"

    def close(self) -> None:
        return None


def bytes_opener(data: bytes, name: str) -> Opener:
    """An opener over bytes already in memory (small members of a compressed archive)."""

    def open_bytes() -> BinaryIO:
        stream = io.BytesIO(data)
        stream.name = name  # BytesIO takes attributes; labels read .name
        return stream

    return open_bytes
