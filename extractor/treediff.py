"""Compare two rootfs trees entry by entry, streaming: ``extractor diff A B``.

``diff_trees(a, b)`` merge-joins two ``walk_tree`` walks (see ``treewalk``:
depth first, names sorted bytewise, symlinks never followed, nothing written)
and yields a ``Difference`` for each field that differs. Contents are hashed
(sha256, 1 MiB chunks) only when both sides are regular files of the same
size, and not at all when both names are the same inode. A directory on one
side only, or a directory against a non-directory, is reported once and its
subtree is not walked.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass

from .treewalk import CHUNK, FD_WINDOW, KINDS, Record, TreeError, TreeWalker, walk_tree

__all__ = [
    "DIFFERENCE_KINDS",
    "EXIT_DIFFERENT",
    "FD_WINDOW",
    "KINDS",
    "Difference",
    "Record",
    "TreeError",
    "TreeWalker",
    "diff_trees",
    "walk_tree",
]

EXIT_DIFFERENT = 1  # ``extractor diff``: the trees differ (0 same, 2 error)

# Every ``Difference.kind``, in the order fields are compared.
DIFFERENCE_KINDS = (
    "only-in-a",
    "only-in-b",
    "type",
    "mode",
    "owner",
    "size",
    "content",
    "target",
    "device",
    "xattr",
    "hardlink",
    "mtime",
)


@dataclass(frozen=True, slots=True)
class Difference:
    """One field that differs at ``path``; ``a``/``b`` are display values, None if absent."""

    path: str
    kind: str  # one of DIFFERENCE_KINDS
    a: str | None
    b: str | None

    def as_dict(self) -> dict[str, str | None]:
        """The JSON form: ``{"path", "kind", "a", "b"}``."""
        return {"path": self.path, "kind": self.kind, "a": self.a, "b": self.b}

    def __str__(self) -> str:
        path = show_path(self.path)
        if self.kind == "only-in-a":
            return f"{path}: only in A ({self.a})"
        if self.kind == "only-in-b":
            return f"{path}: only in B ({self.b})"
        none = "(none)"
        return f"{path}: {self.kind}: {self.a or none} != {self.b or none}"


def show_path(path: str) -> str:
    """``path`` for one line of text: control characters and non-UTF-8 bytes escaped."""
    if path.isprintable() and "\\" not in path:
        return path
    return repr(path.encode("utf-8", "surrogateescape"))[2:-1]


def show_value(value: bytes) -> str:
    """An xattr value for display: quoted text if printable UTF-8, else ``0x`` and hex."""
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return "0x" + value.hex()
    return repr(text) if text.isprintable() else "0x" + value.hex()


def show_mtime(ns: int) -> str:
    """Seconds since the epoch, with the fraction only when there is one."""
    sec, frac = divmod(ns, 1_000_000_000)
    return f"{sec}.{frac:09d}".rstrip("0") if frac else str(sec)


def _sha256(record: Record, root: str) -> str:
    digest = hashlib.sha256()
    try:
        fd = record.open()
        try:
            while chunk := os.read(fd, CHUNK):
                digest.update(chunk)
        finally:
            os.close(fd)
    except OSError as e:
        raise TreeError(f"{os.path.join(root, record.path)}: {e.strerror or e}") from None
    return digest.hexdigest()


def _compare(
    a: Record,
    b: Record,
    mtime: bool,
    cache: dict[str, tuple[str, str]],
    roots: tuple[str, str],
) -> Iterator[Difference]:
    path = a.path
    if a.kind != b.kind:
        yield Difference(path, "type", a.kind, b.kind)
        return
    if a.mode != b.mode and a.kind != "symlink":
        yield Difference(path, "mode", f"{a.mode:04o}", f"{b.mode:04o}")
    if (a.uid, a.gid) != (b.uid, b.gid):
        yield Difference(path, "owner", f"{a.uid}:{a.gid}", f"{b.uid}:{b.gid}")
    if a.kind == "file":
        if a.size != b.size:
            yield Difference(path, "size", str(a.size), str(b.size))
        elif (a.dev, a.ino) != (b.dev, b.ino):  # the same inode needs no reading
            digests = _content(a, b, cache, roots)
            if digests[0] != digests[1]:
                yield Difference(path, "content", f"sha256:{digests[0]}", f"sha256:{digests[1]}")
    if a.target != b.target:
        yield Difference(path, "target", a.target, b.target)
    if a.device != b.device:
        yield Difference(path, "device", _dev(a.device), _dev(b.device))
    if a.xattrs != b.xattrs:
        yield from _xattr_differences(path, dict(a.xattrs), dict(b.xattrs))
    if a.link != b.link:
        yield Difference(path, "hardlink", a.link, b.link)
    if mtime and a.mtime_ns != b.mtime_ns:
        yield Difference(path, "mtime", show_mtime(a.mtime_ns), show_mtime(b.mtime_ns))


def _content(
    a: Record, b: Record, cache: dict[str, tuple[str, str]], roots: tuple[str, str]
) -> tuple[str, str]:
    # Later names of a hardlink group that is the same group on both sides share
    # the first name's inodes: their contents were hashed already.
    if a.link is not None and a.link == b.link and a.link in cache:
        return cache[a.link]
    digests = (_sha256(a, roots[0]), _sha256(b, roots[1]))
    if a.nlink > 1 and b.nlink > 1 and a.link is None and b.link is None:
        cache[a.path] = digests
    return digests


def _dev(device: tuple[int, int] | None) -> str | None:
    return None if device is None else f"{device[0]}:{device[1]}"


def _xattr_differences(path: str, a: dict[str, bytes], b: dict[str, bytes]) -> Iterator[Difference]:
    for key in sorted(a.keys() | b.keys(), key=os.fsencode):
        va, vb = a.get(key), b.get(key)
        if va != vb:
            yield Difference(
                path,
                "xattr",
                None if va is None else f"{key}={show_value(va)}",
                None if vb is None else f"{key}={show_value(vb)}",
            )


def diff_trees(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    *,
    mtime: bool = False,
    ignore: Iterable[str] = (),
) -> Generator[Difference, None, None]:
    """Yield the differences between trees ``a`` and ``b``, in walk order.

    Compared: type, mode (with setuid, setgid, sticky; not for symlinks),
    owner, size and sha256 of regular files, symlink targets, device numbers,
    xattrs, hardlink groups (by the first path of each group, never inode
    numbers) and, with ``mtime``, modification times (directories too).
    ``ignore`` is as for ``walk_tree``. Raises ``TreeError`` for a missing or
    unreadable tree. Nothing is written and no symlink is followed.
    """
    patterns = tuple(ignore)
    cache: dict[str, tuple[str, str]] = {}
    with walk_tree(a, ignore=patterns) as wa, walk_tree(b, ignore=patterns) as wb:
        ra, rb = next(wa, None), next(wb, None)
        while ra is not None or rb is not None:
            if rb is None or (ra is not None and ra.key < rb.key):
                assert ra is not None
                yield Difference(ra.path, "only-in-a", ra.kind, None)
                wa.prune()
                ra = next(wa, None)
            elif ra is None or rb.key < ra.key:
                yield Difference(rb.path, "only-in-b", None, rb.kind)
                wb.prune()
                rb = next(wb, None)
            else:
                yield from _compare(ra, rb, mtime, cache, (wa.root, wb.root))
                if ra.kind != rb.kind:
                    wa.prune()
                    wb.prune()
                ra, rb = next(wa, None), next(wb, None)
