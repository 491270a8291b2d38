"""Walk a rootfs tree read-only, in a fixed order: ``walk_tree(root)``.

It yields one ``Record`` per entry: the root first, then depth first, the
names of each directory sorted bytewise (so ``a``, ``a/b``, ``a-c``: paths
compare as tuples of their components). It never follows a symlink below the
root, never writes, and keeps only the sorted listing of each directory on the
current path, one open directory fd per level (at most ``FD_WINDOW`` of them:
deeper ancestors are closed and reopened through ``..``, checked by device and
inode). ``extractor diff`` merge-joins two walks; ``extractor export`` writes
one as a tar.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .errors import EXIT_USAGE, ExtractorError

CHUNK = 1 << 20
FD_WINDOW = 64  # open directory fds per walk; deeper trees reopen ancestors via ".."
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

KINDS = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


class TreeError(ExtractorError):
    """A tree is missing, not a directory, or could not be read (exit status 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True, slots=True)
class Record:
    """One entry of a walked tree, as ``lstat`` and ``llistxattr`` see it.

    ``path`` is relative to the root, ``/``-separated, ``"."`` for the root
    itself; names that are not UTF-8 are surrogate escapes (``os.fsencode``
    gives the bytes back). ``link`` is the first path of the walk (in walk
    order) that shares this entry's inode, for non-directories with more than
    one link; ``None`` for the first name of a group and for everything else.
    ``open()`` works only until the walk is advanced.
    """

    path: str
    kind: str  # one of KINDS' values
    mode: int  # permission bits with setuid, setgid and sticky
    uid: int
    gid: int
    size: int  # regular files only, else 0
    mtime_ns: int
    target: str | None = None  # symlinks
    device: tuple[int, int] | None = None  # (major, minor) of char and block devices
    xattrs: tuple[tuple[str, bytes], ...] = ()  # sorted by name
    link: str | None = None
    nlink: int = 1
    dev: int = 0
    ino: int = 0
    key: bytes = field(default=b"", repr=False)  # sort key: path bytes, "/" as NUL
    dir_fd: int = field(default=-1, repr=False, compare=False)
    name: bytes = field(default=b"", repr=False, compare=False)

    def open(self) -> int:
        """An fd for reading this regular file (never through a symlink); the caller closes it."""
        return os.open(self.name, _FILE_FLAGS, dir_fd=self.dir_fd)


def compile_ignore(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regex for fnmatch ``patterns`` on relative paths (a leading ``./`` or ``/`` dropped)."""
    parts = []
    for pattern in patterns:
        while pattern.startswith(("./", "/")):
            pattern = pattern[2:] if pattern.startswith("./") else pattern[1:]
        parts.append(fnmatch.translate(pattern.rstrip("/") or "."))
    return re.compile("|".join(parts)) if parts else None


class _Frame:
    __slots__ = ("entries", "fd", "ino", "prefix")

    def __init__(self, fd: int, prefix: str, ino: tuple[int, int], entries: Iterator[bytes]):
        self.fd: int | None = fd
        self.prefix = prefix
        self.ino = ino
        self.entries = entries


class TreeWalker:
    """The iterator ``walk_tree`` returns; ``prune()`` skips the last directory's subtree."""

    def __init__(self, root: str | os.PathLike[str], ignore: Iterable[str] = ()):
        self.root = os.fspath(root)
        self._ignore = compile_ignore(ignore)
        self._stack: list[_Frame] = []
        self._pending: Record | None = None  # a directory yielded but not entered yet
        self._links: dict[tuple[int, int], str] = {}
        self._started = False
        self._where = "."

    def __iter__(self) -> TreeWalker:
        return self

    def __enter__(self) -> TreeWalker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every directory fd; the walk ends."""
        for frame in self._stack:
            if frame.fd is not None:
                os.close(frame.fd)
                frame.fd = None
        self._stack.clear()
        self._pending = None

    def prune(self) -> None:
        """Don't descend into the directory just yielded."""
        self._pending = None

    def __next__(self) -> Record:
        try:
            return self._next()
        except OSError as e:
            self.close()
            where = os.path.join(self.root, self._where) if self._where != "." else self.root
            raise TreeError(f"{where}: {e.strerror or e}") from None

    def _next(self) -> Record:
        if not self._started:
            self._started = True
            return self._open_root()
        if self._pending is not None:
            self._enter(self._pending)
        while self._stack:
            frame = self._stack[-1]
            name = next(frame.entries, None)
            if name is None:
                self._pop()
                continue
            rel = frame.prefix + os.fsdecode(name)
            if self._ignore is not None and self._ignore.fullmatch(rel):
                continue
            self._where = rel
            assert frame.fd is not None
            st = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
            record = self._record(frame.fd, rel, name, st)
            if record.kind == "dir":
                self._pending = record
            return record
        raise StopIteration

    def _open_root(self) -> Record:
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TreeError(f"{self.root}: no such directory") from None
        except NotADirectoryError:
            raise TreeError(f"{self.root}: not a directory") from None
        st = os.fstat(fd)
        self._push(fd, "", st)
        return self._record(fd, ".", b".", st)

    def _push(self, fd: int, prefix: str, st: os.stat_result) -> None:
        try:
            listing = sorted(map(os.fsencode, os.listdir(fd)))
        except BaseException:
            os.close(fd)
            raise
        self._stack.append(_Frame(fd, prefix, (st.st_dev, st.st_ino), iter(listing)))
        if len(self._stack) > FD_WINDOW:
            far = self._stack[-FD_WINDOW - 1]
            if far.fd is not None:
                os.close(far.fd)
                far.fd = None

    def _enter(self, record: Record) -> None:
        self._pending = None
        parent = self._stack[-1]
        assert parent.fd is not None
        fd = os.open(record.name, _DIR_FLAGS, dir_fd=parent.fd)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (record.dev, record.ino):
            os.close(fd)
            raise TreeError(f"{os.path.join(self.root, record.path)}: changed during the walk")
        self._push(fd, record.path + "/", st)

    def _pop(self) -> None:
        child = self._stack.pop()
        assert child.fd is not None
        try:
            if self._stack and self._stack[-1].fd is None:
                up = os.open("..", _DIR_FLAGS, dir_fd=child.fd)
                st = os.fstat(up)
                self._stack[-1].fd = up
                if (st.st_dev, st.st_ino) != self._stack[-1].ino:
                    raise TreeError(f"{self.root}: a directory moved during the walk")
        finally:
            os.close(child.fd)

    def _record(self, dir_fd: int, rel: str, name: bytes, st: os.stat_result) -> Record:
        fmt = stat.S_IFMT(st.st_mode)
        kind = KINDS.get(fmt, "unknown")
        target = device = link = None
        if kind == "symlink":
            target = os.fsdecode(os.readlink(name, dir_fd=dir_fd))
        elif kind in ("char", "block"):
            device = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if kind != "dir" and st.st_nlink > 1:
            link = self._links.setdefault((st.st_dev, st.st_ino), rel)
            if link == rel:
                link = None
        return Record(
            path=rel,
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            size=st.st_size if kind == "file" else 0,
            mtime_ns=st.st_mtime_ns,
            target=target,
            device=device,
            xattrs=_xattrs(dir_fd, name),
            link=link,
            nlink=st.st_nlink,
            dev=st.st_dev,
            ino=st.st_ino,
            key=b"" if rel == "." else os.fsencode(rel).replace(b"/", b"\0"),
            dir_fd=dir_fd,
            name=name,
        )


def walk_tree(root: str | os.PathLike[str], *, ignore: Iterable[str] = ()) -> TreeWalker:
    """Walk ``root`` read-only, yielding a ``Record`` per entry in sorted depth-first order.

    ``ignore`` holds fnmatch patterns matched against each relative path; a
    match hides the entry and, for a directory, everything below it. Errors
    (missing root, unreadable directory) raise ``TreeError``. Close the
    walker (or exhaust it) to release its directory fds.
    """
    return TreeWalker(root, ignore)


def _xattrs(dir_fd: int, name: bytes) -> tuple[tuple[str, bytes], ...]:
    # /proc/self/fd/N/NAME with follow_symlinks=False: the kernel resolves the magic
    # link to the open directory and does not follow NAME (symlinks, FIFOs, devices).
    path = b"/proc/self/fd/%d/%s" % (dir_fd, name) if name != b"." else b"/proc/self/fd/%d" % dir_fd
    try:
        names = os.listxattr(path, follow_symlinks=name == b".")
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return ()
        raise
    if not names:
        return ()
    out = []
    for key in sorted(names, key=os.fsencode):
        try:
            out.append((key, os.getxattr(path, key, follow_symlinks=name == b".")))
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise
    return tuple(out)
