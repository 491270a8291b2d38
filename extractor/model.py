"""Typed records that flow through the engine: entries in, reports out."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from mypy_extensions import mypyc_attr


class Kind(enum.Enum):
    """What a tar entry makes."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    FIFO = "fifo"
    CHAR = "char"
    BLOCK = "block"


# The common kinds as plain module globals, for code that runs per entry:
# ``Kind.FILE`` is an attribute lookup on the enum class (about 70 ns here),
# a global about 8, and an entry compares its kind several times.
FILE, DIR, SYMLINK, HARDLINK = Kind.FILE, Kind.DIR, Kind.SYMLINK, Kind.HARDLINK


# How an entry's data is read: up to ``n`` bytes, ``b""`` when done. Big reads
# come as views into the decoded chunk rather than copies of it (a copy per
# byte of the layer showed as the main process's largest memmove).
ReadData = Callable[[int], "bytes | memoryview"]


# ``init=False`` and an ``__init__`` of its own: compiled by mypyc, the one
# ``dataclass`` writes would still run interpreted, for every entry of a layer.
@dataclass(slots=True, init=False)
class Entry:
    """One tar member, decoded and normalised, with its data still in the stream.

    ``path`` is the member name normalised under the root: no leading ``/`` or
    ``./``, no ``.`` or ``..`` components, no doubled or trailing slash; ``""``
    is the root itself. Names that are not UTF-8 keep their bytes as surrogate
    escapes, which ``os`` functions turn back into the same bytes.
    """

    name: str  # as stored in the tar, for messages
    path: str
    kind: Kind
    mode: int  # permission bits with setuid, setgid and sticky
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int | None
    size: int  # bytes of data that follow in the stream
    linkname: str  # symlink target verbatim; hardlink target normalised like path
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes]
    # For sparse files: the (offset, length) runs of data in file order and the
    # full length of the file; the stream then holds only the runs' bytes.
    sparse: list[tuple[int, int]] | None
    realsize: int

    def __init__(
        self,
        name: str,
        path: str,
        kind: Kind,
        mode: int,
        uid: int,
        gid: int,
        mtime_ns: int,
        atime_ns: int | None = None,
        size: int = 0,
        linkname: str = "",
        devmajor: int = 0,
        devminor: int = 0,
        xattrs: dict[str, bytes] | None = None,
        sparse: list[tuple[int, int]] | None = None,
        realsize: int = 0,
    ) -> None:
        self.name = name
        self.path = path
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime_ns = mtime_ns
        self.atime_ns = atime_ns
        self.size = size
        self.linkname = linkname
        self.devmajor = devmajor
        self.devminor = devminor
        self.xattrs = {} if xattrs is None else xattrs
        self.sparse = sparse
        self.realsize = realsize


@dataclass(slots=True)
class LayerReport:
    """What applying one layer did."""

    index: int
    source: str
    compression: str = "none"
    digest: str = ""  # sha256 of the bytes as read (compressed)
    diff_id: str = ""  # sha256 of the uncompressed tar
    size: int = 0  # compressed bytes read
    uncompressed_size: int = 0
    entries: int = 0
    bytes: int = 0  # file content bytes written
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    specials: int = 0  # FIFOs and device nodes
    whiteouts: int = 0
    opaque_dirs: int = 0
    skipped: int = 0  # entries not written (rootless devices, AUFS bookkeeping)
    duplicates: int = 0  # paths listed more than once (a spec violation; last wins)
    warnings: int = 0
    verified: bool = False  # digests and sizes checked against what the image said
    seconds: float = 0.0


@dataclass(slots=True)
class Notice:
    """A tolerated loss, e.g. an xattr the filesystem refused. Counted, never fatal."""

    layer: int
    path: str
    event: str
    detail: str


# Compiled (``native``), so an interpreted subclass must be allowed for.
@mypyc_attr(allow_interpreted_subclasses=True)  # reverse.ReverseResult
@dataclass(slots=True)
class ApplyResult:
    """What an apply did: one report per layer plus the warnings, in order."""

    dest: str
    layers: list[LayerReport] = field(default_factory=list)
    warnings: list[Notice] = field(default_factory=list)
    seconds: float = 0.0
    rootless: bool = False

    @property
    def entries(self) -> int:
        """Entries read across all layers."""
        return sum(layer.entries for layer in self.layers)

    @property
    def bytes(self) -> int:
        """File content bytes written across all layers."""
        return sum(layer.bytes for layer in self.layers)
