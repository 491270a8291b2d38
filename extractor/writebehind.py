"""A helper process that creates regular files for ``Root``.

Per small file, parsing its header and applying the rules costs about as much
Python time as the syscalls that create it, and the GIL keeps threads from
overlapping the two. So with two cores ``Root`` forks one helper: the main
process reads, decides and makes directories and links, and hands each regular
file of up to ``SEND_MAX`` bytes (name, owner, mode, times, bytes) down a pipe,
in batches; the helper creates it. Nothing else is ever sent. Larger files the
main process writes itself: there the bytes, not the syscalls, are the cost,
and through the pipe they would only be copied twice more.

Why the order and the confinement hold:

- The helper is sent a file's parent as a physical path (one ``Root`` resolved,
  with no symlink in it) and opens it one component at a time from the root fd
  with ``O_NOFOLLOW``, refusing ``.`` and ``..``. Whatever it is sent, it can
  only create regular files below the root.
- ``Root`` sends a file only when its name holds nothing or a regular file
  (which the helper unlinks first, as ``Root`` would). Before any removal,
  before a directory stops being "plain", before anything else is made at a
  name a sent file will take, before a hardlink to one, before writing a large
  file, and at the end of each layer, ``Root`` waits for the helper to finish
  (``settle``). So every change meets the tree the single-process order would
  have left, and a full disk fails at the same entry.
- The helper drops its directory fds at every settle, and directories are only
  removed after one, so no cached fd outlives a replaced component.

The helper is forked before a layer's decoding threads start and uses only
``os`` calls. A failure in it is reported at the next settle, naming its entry;
the helper then skips what follows, since it came later. On an error the main
process settles first (what it sent came before the error); after a signal it
closes the pipe and waits for the helper to end before anything else happens
to the tree.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import resource
import signal
import stat
import struct
import time
from collections import deque

from .errors import FailedWriteError, OperationalError
from .model import ReadData

# Files up to this size go to the helper (``Root`` decides), copied into its batches.
# Bigger ones are better written by the main process: streamed through the pipe
# (and spliced into the file) they made a real-content layer 5-13 % slower.
SEND_MAX = 64 << 10
# Before writing a file larger than this the main process settles, so that a full
# disk fails at the same entry as in one process.
LARGE = 1 << 20
# Files sent and not yet made beyond which the main process makes the next small
# file itself. Where the helper's syscalls are the slower half (many small files,
# with the main process compiled) this keeps both cores busy.
LAG = 512
CHOWN, CHMOD = 1, 2  # what the helper must do beyond create, write and set times

_FILE, _SETTLE = 1, 2
# op, flags, mode, uid, gid, atime_ns, mtime_ns, len(parent), len(name), len(data)
_HEAD = struct.Struct("<BBIIIqqIII")
# files done, errno (0: all went well), len(message), len(failed file's physical path)
_REPLY = struct.Struct("<qiII")
_DONE = struct.Struct("<q")  # the shared progress counter
_FLUSH = 256 << 10
_PIPE_SIZE = 1 << 20
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIRS = 256  # directory fds the helper keeps between settles
_GRACE = 10.0  # seconds the helper has to finish after the main process is done


class WriteBehind:
    """The main process's end: send files, ``settle``, ``close``."""

    def __init__(self, root_fd: int):
        data_r, data_w = os.pipe2(os.O_CLOEXEC)
        reply_r, reply_w = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(data_w, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass  # the default 64 KiB only means more round trips
        self._shared = mmap.mmap(-1, _DONE.size)
        try:
            pid = os.fork()
        except OSError:
            for fd in (data_r, data_w, reply_r, reply_w):
                os.close(fd)
            self._shared.close()
            raise
        if pid == 0:  # pragma: no cover - the helper; its work is seen in the tree
            status = 1
            try:
                _keep_only(root_fd, data_r, reply_w)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _serve(root_fd, data_r, reply_w, self._shared)
                status = 0
            finally:
                os._exit(status)
        os.close(data_r)
        os.close(reply_w)
        self._pid = pid
        self._out = data_w
        self._replies = reply_r
        self._buf = bytearray()
        self._sent = 0  # files sent
        self._settled = 0  # files sent before the last settle
        # What may not be made yet, physical path -> entry path, one map per
        # batch written to the pipe: (files sent up to its end, its files). A
        # batch is dropped once the helper is past it, so the maps hold about
        # what the pipe does, not a note per file of the layer.
        self._batches: deque[tuple[int, dict[str, str]]] = deque()
        self._batch: dict[str, str] = {}  # the one being filled
        self._parent, self._parent_b = "", b""  # the last parent, encoded once
        self._broken = False

    def send(
        self,
        parent: str,
        name: str,
        phys: str,
        path: str,
        flags: int,
        mode: int,
        ids: tuple[int, int],
        times: tuple[int, int],
        size: int,
        read: ReadData,
    ) -> None:
        """Queue the creation of file ``name`` in physical directory ``parent``, with
        the ``size`` (at most ``SEND_MAX``) bytes ``read`` gives.

        ``phys`` is the two joined; ``path`` is the entry's path in the layer,
        for a failure's message. ``flags`` holds ``CHOWN`` and ``CHMOD`` for
        what a new file needs beyond its data and times.
        """
        if parent is not self._parent:  # files come in runs per directory
            self._parent, self._parent_b = parent, parent.encode("utf-8", "surrogateescape")
        parent_b, name_b = self._parent_b, name.encode("utf-8", "surrogateescape")
        buf = self._buf
        buf.extend(_HEAD.pack(_FILE, flags, mode, *ids, *times, len(parent_b), len(name_b), size))
        buf.extend(parent_b)
        buf.extend(name_b)
        self._sent += 1
        self._batch[phys] = path
        try:
            while size:
                data = read(size)
                buf.extend(data)
                size -= len(data)
            if len(buf) >= _FLUSH:
                self._flush()
        except BaseException:
            # A message cut short (a truncated layer, a signal): nothing more may
            # follow it, so no settle either; ``close`` lets the helper finish.
            self._broken = True
            raise

    def behind(self) -> bool:
        """Whether the helper has fallen ``LAG`` files behind: then the main
        process does better to create the next small file itself than to wait
        on a full pipe."""
        done: int = _DONE.unpack_from(self._shared)[0]
        return self._sent - done > LAG

    def pending(self, phys: str) -> bool:
        """Whether a file sent for ``phys`` may not be made yet (if True, it may be)."""
        return phys in self._batch or any(phys in files for _, files in self._batches)

    def settle(self) -> None:
        """Wait until every file sent is created; raise ``FailedWriteError`` if one was not."""
        if self._broken:
            raise OperationalError("a file sent to the helper process was cut short")
        if self._sent == self._settled:
            return
        self._buf.append(_SETTLE)
        self._flush()
        _, err, size, phys_size = _REPLY.unpack(self._read(_REPLY.size))
        message = self._read(size).decode(errors="replace") if size else ""
        phys = self._read(phys_size).decode("utf-8", "surrogateescape")
        batches = [files for _, files in self._batches]
        self._settled = self._sent
        self._batches.clear()
        if err:
            failed = FailedWriteError(err, message or os.strerror(err))
            failed.entry = phys  # unless a symlink in the entry's path made them differ:
            for files in reversed(batches):
                if phys in files:
                    failed.entry = files[phys]
                    break
            raise failed

    def close(self) -> None:
        """End the helper once it has made what it was sent before the end.

        After an error or a signal that may be a part of a file, cut short as it
        would be from one process. A helper that does not end within
        ``_GRACE`` seconds is killed: nobody may remove or rename the tree
        while it still writes there.
        """
        if self._pid == 0:
            return
        os.close(self._out)  # the helper reads on to the end, then exits
        os.close(self._replies)
        self._shared.close()
        pid, self._pid = self._pid, 0
        deadline = time.monotonic() + _GRACE
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.001)

    def _flush(self) -> None:
        self._write(self._buf)
        self._buf.clear()
        batches = self._batches
        if self._batch:
            batches.append((self._sent, self._batch))
            self._batch = {}
        done = _DONE.unpack_from(self._shared)[0]
        while batches and batches[0][0] <= done:
            batches.popleft()

    def _write(self, data: bytes | bytearray) -> None:
        try:
            write_all(self._out, data)
        except BrokenPipeError:
            raise OperationalError("the file-writing helper process exited") from None

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            more = os.read(self._replies, n - len(data))
            if not more:
                raise OperationalError("the file-writing helper process exited")
            data += more
        return data


def _serve(root_fd: int, data_fd: int, reply_fd: int, shared: mmap.mmap) -> None:
    """The helper: create the files sent, answer settles, until the pipe closes."""
    dirs: dict[bytes, int] = {}
    done = 0
    failure: OSError | None = None  # the first failure since the last settle
    failed = b""  # its physical path
    data, pos = b"", 0
    head_size = _HEAD.size
    while True:
        if pos < len(data) and data[pos] == _SETTLE:
            pos += 1
            _forget(dirs)
            err, message = 0, b""
            if failure is not None:
                err = failure.errno or errno.EIO
                message = (failure.strerror or str(failure)).encode()
            reply = _REPLY.pack(done, err, len(message), len(failed))
            os.write(reply_fd, reply + message + failed)
            failure, failed = None, b""
            continue
        header = None
        if len(data) - pos >= head_size:
            header = _HEAD.unpack_from(data, pos)
            names = pos + head_size + header[7] + header[8]
            end = names + header[9]
        if header is None or end > len(data):  # files are small: wait for all of it
            more = os.read(data_fd, _PIPE_SIZE)
            if not more:
                return
            data, pos = data[pos:] + more, 0
            continue
        _, flags, mode, uid, gid, atime, mtime, plen, _, _ = header
        start = pos + head_size
        parent = data[start : start + plen]
        name = data[start + plen : names]
        pos = end
        if failure is not None:
            continue  # it came after a failure: skipped, as one process would have stopped
        try:
            fd = _open(_dir(dirs, root_fd, parent), name, mode)
            try:
                write_all(fd, memoryview(data)[names:end])
                if flags & CHOWN:
                    os.fchown(fd, uid, gid)
                if flags & CHMOD:
                    os.fchmod(fd, mode)  # after the chown, which clears setuid
                os.utime(fd, ns=(atime, mtime))
            finally:
                os.close(fd)
            done += 1
            _DONE.pack_into(shared, 0, done)
        except OSError as e:
            failure, failed = e, parent + b"/" + name if parent else name


def _keep_only(*fds: int) -> None:
    """Close every fd but ``fds`` and the standard ones: a pipe the caller reads a
    layer from must see its end when its writer closes it, not when the helper
    does. (No /proc needed: the apply may run in a chroot.)"""
    low = 3
    for fd in sorted({*fds, 0, 1, 2}):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    os.closerange(low, limit if limit > 0 else 1 << 20)


def _forget(dirs: dict[bytes, int]) -> None:
    for fd in dirs.values():
        os.close(fd)
    dirs.clear()


def _dir(dirs: dict[bytes, int], root_fd: int, parent: bytes) -> int:
    """The directory at physical path ``parent``, opened without following anything."""
    if not parent:
        return root_fd
    fd = dirs.get(parent)
    if fd is not None:
        return fd
    if len(dirs) >= _DIRS:
        _forget(dirs)
    fd = os.dup(root_fd)
    try:
        for part in parent.split(b"/"):
            if part in (b"", b".", b".."):
                raise OSError(errno.EINVAL, "not a physical path", parent)
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    dirs[parent] = fd
    return fd


def _open(dfd: int, name: bytes, mode: int) -> int:
    try:
        return os.open(name, _NEW_FILE, mode & 0o777, dir_fd=dfd)
    except FileExistsError:
        # Root sends only names holding nothing or a regular file.
        if not stat.S_ISREG(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
            raise OSError(errno.EEXIST, "internal error: not a regular file", name) from None
        os.unlink(name, dir_fd=dfd)
        return os.open(name, _NEW_FILE, mode & 0o777, dir_fd=dfd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data``, whatever short writes the file system makes."""
    # An offset, not ``view = view[n:]``: compiled by mypyc, that loop wrote twice.
    # The view is released on return, so a bytearray written from can be cleared.
    with memoryview(data) as view:
        done, total = 0, len(view)
        while done < total:
            done += os.write(fd, view[done:])
