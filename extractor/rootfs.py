"""The only writer: every change to the target tree goes through ``Root``.

Safety lives here. Paths are resolved the way a chroot into the root would
resolve them: one component at a time from a directory fd, reading each
symlink and continuing from the root for absolute targets, with ``..``
clamped at the root and at most ``RootOptions.max_symlinks`` links followed. The last
component of an entry is never followed: an existing file, link or
directory there is removed and the entry created exclusively, so writes
never go through a symlink or into another name's inode.

Threat model: the layers are hostile, the root directory is not changed by
anyone else while an apply runs, and the root itself (the path given) is
trusted.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Container
from dataclasses import dataclass

from . import xattrs
from .errors import BadInputError, UnsafeEntryError
from .limits import SYMLINKS
from .model import DIR, FILE, SYMLINK, Entry, Kind, ReadData
from .paths import PathSet, is_within
from .writebehind import CHMOD, CHOWN, LARGE, SEND_MAX, WriteBehind, write_all

CHUNK = 1 << 20
PARENTS = 256  # resolved parent directories kept open (each an O_PATH fd)

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_PRIVILEGED_XATTRS = ("security.", "trusted.")  # skipped when rootless
_SPECIAL = {Kind.FIFO: stat.S_IFIFO, Kind.CHAR: stat.S_IFCHR, Kind.BLOCK: stat.S_IFBLK}


@dataclass(frozen=True, slots=True)
class IdMap:
    """``CONTAINER:HOST:SIZE``: container ids [c, c+size) become [h, h+size)."""

    container: int
    host: int
    size: int

    @classmethod
    def parse(cls, text: str) -> IdMap:
        """Parse ``CONTAINER:HOST:SIZE`` (SIZE defaults to 1), as umoci takes it."""
        parts = text.split(":")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"bad id map {text!r}: want CONTAINER:HOST[:SIZE]") from None
        if len(nums) == 2:
            nums.append(1)
        if len(nums) != 3 or min(nums) < 0 or nums[2] == 0:
            raise ValueError(f"bad id map {text!r}: want CONTAINER:HOST[:SIZE]")
        return cls(*nums)


def map_id(value: int, maps: tuple[IdMap, ...], what: str) -> int:
    """Shift a container id through the maps; with no maps it is unchanged."""
    if not maps:
        return value
    for m in maps:
        if m.container <= value < m.container + m.size:
            return m.host + value - m.container
    raise BadInputError(f"{what} {value} is outside the --{what}-map")


@dataclass(frozen=True, slots=True)
class RootOptions:
    """How the root is written. ``rootless`` is forced on for a non-root user."""

    rootless: bool = False
    uid_maps: tuple[IdMap, ...] = ()
    gid_maps: tuple[IdMap, ...] = ()
    keep_dirlinks: bool = False
    max_symlinks: int = SYMLINKS  # followed while resolving one path


Notify = Callable[[str, str, str], None]  # (event, path, detail)


class Root:
    """A directory that layers are applied to, and every write into it.

    ``_parents`` keeps up to ``PARENTS`` resolved parent directories (as
    fds), because entries mostly go to a few directories at a time; a
    directory just written is kept too, as its children tend to follow. Reusing
    a resolution after a component it went through was replaced is how
    containerd's CVE-2025-47290 wrote onto the host, so every removal of an
    existing directory or symlink drops them all (``_forget``). Nothing else
    changes what a walk would find: a walk goes only through directories and
    symlinks, and the tree holds nothing but what this root writes.

    Creating a file as root in a directory that is neither setgid nor has a
    default ACL gives it our ids and its mode less the umask, so a file whose
    owner and mode are already those needs no ``fchown`` or ``fchmod``: two
    of the six syscalls a small file costs. Each cached parent remembers
    whether it is such a "plain" directory; writing setgid or ACLs onto a
    directory drops the cache.

    ``_dirmeta`` holds the final mode and times of directories, applied by
    ``finish`` once nothing more is written below them; as non-root,
    directories stay owner-writable until then so read-only ones still
    receive their children.
    """

    def __init__(self, dest: str, options: RootOptions, notify: Notify):
        if not os.path.lexists(dest):
            # Created 0755 whatever the umask; a layer's "./" entry sets it at the end.
            os.makedirs(dest, exist_ok=True)
            os.chmod(dest, 0o755)
        self.dest = dest
        self.options = options
        self.privileged = os.geteuid() == 0 and not options.rootless
        self.notify = notify
        self.fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # lexical path -> (fd, physical path, plain, symlinks followed to reach it)
        self._parents: dict[str, tuple[int, str, bool, int]] = {}
        self._plain = False  # whether the directory ``parent`` last returned is plain
        self._links = 0  # and how many symlinks resolving it followed
        self._creator = (os.geteuid(), os.getegid())
        self._umask = _umask()
        self._mapped = bool(options.uid_maps or options.gid_maps)
        self._stale: list[int] = []  # forgotten fds the current entry may still be using
        self._dirmeta: dict[str, tuple[int, int, int]] = {}  # physical -> mode, atime, mtime
        # Directories made by this root (so holding only what it made since), and
        # what it made that is not a regular file: with these a small file can be
        # sent to the helper without asking the kernel what its name holds. As
        # hashes, so deep trees cost 8 bytes a name; a collision (about 2**-64)
        # would only make the helper refuse a file, never write elsewhere.
        self._fresh = PathSet()
        if not _has_children(self.fd):
            self._fresh.add("")
        self._made = PathSet()
        self._behind: WriteBehind | None = None

    def close(self) -> None:
        """Release the fds and end the helper; the tree stays as it is."""
        if self._behind is not None:
            self._behind.close()
            self._behind = None
        self._forget()
        self._close_stale()
        os.close(self.fd)

    # -- resolution ---------------------------------------------------------

    def start_helper(self) -> None:
        """From now on, have a helper process create regular files (``writebehind``).

        It forks: call it while no other thread runs.
        """
        if self._behind is None:
            try:
                self._behind = WriteBehind(self.fd)
            except OSError:
                pass  # no process to spare (RLIMIT_NPROC, a jail): this one writes all

    def settle(self) -> None:
        """Wait until the helper has created every file sent to it.

        Raises ``writebehind.FailedWriteError`` (an ``OSError`` naming its entry)
        for one it could not create.
        """
        if self._behind is not None:
            self._behind.settle()

    def _forget(self) -> None:
        # Whatever drops the cache changes the tree in a way sent files must precede.
        self.settle()
        # One fd may be the parent the current entry is being written in, which
        # is still the right directory; they are closed before the next lookup.
        if self._parents:
            self._stale.extend(cached[0] for cached in self._parents.values())
            self._parents.clear()

    def _close_stale(self) -> None:
        while self._stale:
            os.close(self._stale.pop())

    def walk(self, path: str, create: bool) -> tuple[int, str]:
        """Open the directory ``path`` resolves to inside the root; returns (fd, physical).

        The fd is the caller's to close. With ``create``, missing directories
        are made (mode 0755) and a non-directory in the way is replaced by one,
        as a parent of a new entry must be; without it, a missing or
        non-directory component raises ``FileNotFoundError``.
        """
        fd, phys, _ = self._walk(path, create, self.fd, "", 0)
        return fd, phys

    def _walk(
        self, path: str, create: bool, start: int, start_phys: str, links: int
    ) -> tuple[int, str, int]:
        """``walk`` from directory ``start`` (physically ``start_phys``, reached by
        following ``links`` symlinks); also returns the links followed in all."""
        # One fd at a time: ".." climbs with openat(cur, ".."), which is the
        # physical parent as long as nothing else changes the tree (the threat
        # model), so thousands of levels cost no more fds than one.
        todo = path.split("/")[::-1] if path else []
        cur = os.dup(start)
        names: list[str] = start_phys.split("/") if start_phys else []
        try:
            while todo:
                part = todo.pop()
                if part in ("", "."):
                    continue
                if part == "..":
                    if names:
                        names.pop()
                        cur = self._step(cur, "..")
                    continue
                try:
                    cur = self._step(cur, part)
                    names.append(part)
                    continue
                except FileNotFoundError:
                    if not create:
                        raise
                    if self._sent_to("/".join([*names, part])):
                        todo.append(part)  # a file is on its way there: look again
                        continue
                    try:
                        self._mkdir_implicit(cur, part)
                        self._made_dir("/".join([*names, part]))
                    except PermissionError:
                        if not self._unlock(cur, "/".join(names)):
                            raise
                    todo.append(part)
                    continue
                except PermissionError:
                    if not self._unlock(cur, "/".join(names)):
                        raise
                    todo.append(part)
                    continue
                except OSError as e:
                    if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                st = os.stat(part, dir_fd=cur, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > self.options.max_symlinks:
                        raise UnsafeEntryError(
                            f"too many levels of symbolic links resolving {path!r}"
                        )
                    target = os.readlink(part, dir_fd=cur)
                    if target.startswith("/"):
                        os.close(cur)
                        cur = os.dup(self.fd)
                        names.clear()
                    todo.extend(target.split("/")[::-1])
                elif not stat.S_ISDIR(st.st_mode):
                    if not create:
                        raise FileNotFoundError(errno.ENOTDIR, "not a directory", part)
                    self._remove(cur, part, "/".join([*names, part]), None)
                    todo.append(part)
                else:
                    raise OSError(errno.EIO, "directory changed during the walk", part)
        except BaseException:
            os.close(cur)
            raise
        return cur, "/".join(names), links

    @staticmethod
    def _step(cur: int, name: str) -> int:
        """Open directory ``name`` in ``cur`` without following it; closes ``cur``."""
        nxt = os.open(name, _DIR_FLAGS, dir_fd=cur)
        os.close(cur)
        return nxt

    def parent(self, path: str) -> tuple[int, str, str]:
        """(fd, physical parent path, basename) for an entry path; fd is borrowed."""
        head, _, name = path.rpartition("/")
        cached = self._parents.get(head)
        if cached is None:
            self._close_stale()
            # Continue from the nearest cached ancestor, if a close one is cached:
            # the same walk, minus the components it already went through.
            start, start_phys, links, rest = self.fd, "", 0, head
            ancestor = head
            for _ in range(8):
                ancestor = ancestor.rpartition("/")[0]
                hit = self._parents.get(ancestor)
                if hit is not None:
                    start, start_phys, _, links = hit
                    rest = head[len(ancestor) + 1 :] if ancestor else head
                    break
                if not ancestor:
                    break
            fd, phys, links = self._walk(rest, True, start, start_phys, links)
            if not self.privileged:
                self._unlock(fd, phys)  # a read-only directory from an earlier run
            plain = not os.fstat(fd).st_mode & stat.S_ISGID and not xattrs.has_default_acl(fd)
            cached = self._remember(head, fd, phys, plain, links)
        self._plain = cached[2]
        self._links = cached[3]
        return cached[0], cached[1], name

    def _remember(
        self, path: str, fd: int, phys: str, plain: bool, links: int
    ) -> tuple[int, str, bool, int]:
        """Cache ``fd`` as the directory lexical ``path`` resolves to (it takes the
        fd), reached by following ``links`` symlinks, as a walk would count them."""
        parents = self._parents
        old = parents.pop(path, None)
        if old is not None:
            os.close(old[0])
        if len(parents) >= PARENTS:
            # The oldest. Not in use: callers remember only once done with their parent.
            os.close(parents.pop(next(iter(parents)))[0])
        parents[path] = cached = (fd, phys, plain, links)
        return cached

    def _mkdir_implicit(self, dfd: int, name: str) -> None:
        os.mkdir(name, 0o755, dir_fd=dfd)
        os.chmod(xattrs.link_name(dfd, name), 0o755)  # defeat the umask

    def _made_dir(self, phys: str) -> None:
        self._made.add(phys)
        self._fresh.add(phys)

    def _unlock(self, fd: int, phys: str | None) -> bool:
        """As non-root, make a directory we own writable and enterable; False if we can't.

        Its mode is put back by ``finish`` unless the layer sets a new one.
        """
        if self.privileged:
            return False
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or mode & 0o700 == 0o700:
            return False
        os.chmod(f"/proc/self/fd/{fd}", mode | 0o700)
        if phys is not None:  # None: the directory is about to be removed
            self._dirmeta.setdefault(phys, (mode, st.st_atime_ns, st.st_mtime_ns))
        return True

    @staticmethod
    def join(parent: str, name: str) -> str:
        """The physical path of ``name`` in the physical directory ``parent``."""
        return f"{parent}/{name}" if parent else name

    # -- removal ------------------------------------------------------------

    def _remove(self, dfd: int, name: str, phys: str, keep: Container[str] | None) -> None:
        """Remove ``name`` in ``dfd``; a directory with all below it, except ``keep``.

        ``keep`` holds what the current layer wrote (and the ancestors of
        that): a whiteout only hides what lower layers had.
        """
        self.settle()
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        kept = keep is not None and phys in keep
        if stat.S_ISDIR(st.st_mode):
            self._forget()
            self._remove_dir(dfd, name, phys, keep, kept)
        elif not kept:
            if stat.S_ISLNK(st.st_mode):
                self._forget()
            os.unlink(name, dir_fd=dfd)

    def _open_for_removal(self, dfd: int, name: str, phys: str | None) -> int:
        """A readable fd of directory ``name``, made writable so its children can go."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=dfd)
        except PermissionError:
            pfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            try:
                if not self._unlock(pfd, phys):
                    raise
            finally:
                os.close(pfd)
            fd = os.open(name, flags, dir_fd=dfd)
        self._unlock(fd, phys)
        return fd

    def _remove_dir(
        self, dfd: int, name: str, phys: str, keep: Container[str] | None, keep_top: bool
    ) -> None:
        """Remove directory ``name`` and what is below it, except ``keep``.

        Iterative and holding one directory fd at a time, climbing back with
        ``..`` (safe under the threat model: nothing else changes the tree),
        so trees nested thousands of levels deep need neither deep recursion
        nor thousands of fds.
        """
        # One frame per directory on the way down: its name, its physical path
        # (only while something below it may be kept: ``keep`` holds the
        # ancestors of all it holds, so outside it nothing needs checking and
        # a path 10,000 levels deep does not cost 10,000 long strings), whether
        # it stays, and the children still to visit.
        fd = self._open_for_removal(dfd, name, phys if keep_top else None)
        watch = phys if keep is not None and phys in keep else None
        frames: list[tuple[str, str | None, bool, list[str]]] = [
            (name, watch, keep_top, _children(fd))
        ]
        try:
            while frames:
                dname, dphys, dkept, todo = frames[-1]
                if todo:
                    child = todo.pop()
                    cphys = None if dphys is None else self.join(dphys, child)
                    ckept = cphys is not None and keep is not None and cphys in keep
                    st = os.stat(child, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        sub = self._open_for_removal(fd, child, cphys if ckept else None)
                        os.close(fd)
                        fd = sub
                        frames.append((child, cphys if ckept else None, ckept, _children(fd)))
                    elif not ckept:
                        os.unlink(child, dir_fd=fd)
                    continue
                frames.pop()
                if frames:
                    parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
                    os.close(fd)
                    fd = parent
                if not dkept:
                    os.rmdir(dname, dir_fd=fd if frames else dfd)
        finally:
            os.close(fd)
        # Directories that are gone must not get modes or times at the end,
        # even if a later entry makes a new directory at the same path.
        for key in [k for k in self._dirmeta if is_within(k, phys)]:
            if not ((key == phys and keep_top) or (keep is not None and key in keep)):
                del self._dirmeta[key]

    def remove(self, path: str, keep: Container[str]) -> str | None:
        """Apply a whiteout: remove ``path`` (the link itself if it is one) from lower layers.

        Returns the physical path removed, or ``None`` if nothing was there.
        """
        head, _, name = path.rpartition("/")
        try:
            fd, phys = self.walk(head, create=False)
        except FileNotFoundError:
            return None
        try:
            target = self.join(phys, name)
            try:
                self._remove(fd, name, target, keep)
            except FileNotFoundError:
                return None
            return target
        finally:
            os.close(fd)

    def clear_dir(self, path: str, keep: Container[str]) -> str:
        """Apply an opaque marker: empty directory ``path`` of what lower layers had."""
        fd, phys = self.walk(path, create=True)
        try:
            self._forget()
            self._remove_dir(fd, ".", phys, keep, True)
        finally:
            os.close(fd)
        return phys

    # -- creation -----------------------------------------------------------

    def _replace(self, dfd: int, name: str, phys: str) -> None:
        """Make room for a new entry at ``name``: remove whatever is there."""
        try:
            self._remove(dfd, name, phys, None)
        except FileNotFoundError:
            pass

    def write(self, entry: Entry, read: ReadData) -> str | None:
        """Create ``entry`` (not a hardlink) at its path; returns its physical path.

        ``None`` means the entry was skipped (a device node without privilege);
        whatever lower layers had at its path is gone all the same.
        """
        if not entry.path:
            return self._write_root(entry)
        dfd, parent_phys, name = self.parent(entry.path)
        phys = f"{parent_phys}/{name}" if parent_phys else name
        kind = entry.kind
        if kind is FILE:
            behind = self._behind
            if (
                behind is not None
                and not behind.behind()
                and self._sendable(behind, entry, dfd, name, parent_phys, phys)
            ):
                self._send_file(behind, parent_phys, name, phys, entry, read)
            else:
                if entry.size > LARGE:
                    self.settle()  # so that running out of space hits the same entry
                else:
                    self._sent_to(phys)
                self._write_file(dfd, name, phys, entry, read)
            return phys
        self._sent_to(phys)
        self._made.add(phys)
        if kind is DIR:
            self._write_dir(dfd, name, phys, entry)
        elif kind is SYMLINK:
            self._write_symlink(dfd, name, phys, entry)
        elif not self._write_special(dfd, name, phys, entry):
            return None
        return phys

    def _sent_to(self, phys: str) -> bool:
        """Whether a file sent to the helper is still to be made at ``phys``; if
        so, waits for it, as whatever comes next there must find it."""
        behind = self._behind
        if behind is not None and behind.pending(phys):
            behind.settle()
            return True
        return False

    def _sendable(
        self, behind: WriteBehind, entry: Entry, dfd: int, name: str, parent: str, phys: str
    ) -> bool:
        """Whether the helper may create this file: at most ``SEND_MAX`` bytes, not
        sparse, nothing but owner, mode and times to set, and its name holding
        nothing or a regular file."""
        if entry.size > SEND_MAX or entry.sparse is not None or entry.xattrs:
            return False
        if not self.privileged and any(self._ids(entry)):
            return False  # the owner goes in an xattr (``_record_owner_fd``)
        if (parent in self._fresh and phys not in self._made) or behind.pending(phys):
            return True
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        return stat.S_ISREG(st.st_mode)

    def _send_file(
        self,
        behind: WriteBehind,
        parent: str,
        name: str,
        phys: str,
        entry: Entry,
        read: ReadData,
    ) -> None:
        uid, gid = self._ids(entry)
        plain = self._plain
        flags = CHMOD if self._needs_chmod(entry, plain) else 0
        if self.privileged and (not plain or (uid, gid) != self._creator):
            flags |= CHOWN
        mtime = entry.mtime_ns
        times = (entry.atime_ns or mtime, mtime)
        behind.send(
            parent, name, phys, entry.path, flags, entry.mode, (uid, gid), times, entry.size, read
        )

    def _write_root(self, entry: Entry) -> str:
        if entry.kind is not Kind.DIR:
            raise UnsafeEntryError(
                f"refusing to change the root directory into a {entry.kind.value}"
            )
        self._forget()  # its xattrs may make it stop being "plain"
        self._own(self.fd, entry)
        self._set_xattrs_fd(self.fd, entry, replace=True)
        self._dirmeta[""] = (entry.mode, entry.atime_ns or entry.mtime_ns, entry.mtime_ns)
        return ""

    def _write_file(self, dfd: int, name: str, phys: str, entry: Entry, read: ReadData) -> None:
        plain = self._plain
        perms = entry.mode & 0o777
        try:
            fd = os.open(name, _NEW_FILE, perms, dir_fd=dfd)
        except FileExistsError:
            self._replace(dfd, name, phys)
            fd = os.open(name, _NEW_FILE, perms, dir_fd=dfd)
        try:
            if entry.sparse is None:
                if entry.size:
                    while chunk := read(CHUNK):
                        written = os.write(fd, chunk)
                        if written != len(chunk):
                            write_all(fd, chunk[written:])  # a short write: finish it
            else:
                for offset, length in entry.sparse:
                    while length:
                        chunk = read(min(length, CHUNK))
                        if not chunk:
                            raise BadInputError("truncated sparse file data")
                        os.pwrite(fd, chunk, offset)
                        offset += len(chunk)
                        length -= len(chunk)
                os.ftruncate(fd, entry.realsize)
            self._own(fd, entry, plain)
            if self._needs_chmod(entry, plain):
                os.fchmod(fd, entry.mode)  # also after a chown, which clears setuid
            if entry.xattrs:
                self._set_xattrs_fd(fd, entry, replace=False)
            mtime = entry.mtime_ns
            os.utime(fd, ns=(entry.atime_ns or mtime, mtime))
        finally:
            os.close(fd)

    def _needs_chmod(self, entry: Entry, plain: bool) -> bool:
        """Whether a file just created with ``entry``'s permission bits needs a chmod."""
        perms = entry.mode & 0o777
        return not plain or perms != entry.mode or bool(perms & self._umask)

    def _write_dir(self, dfd: int, name: str, phys: str, entry: Entry) -> None:
        mode = entry.mode if self.privileged else entry.mode | 0o700
        if mode & stat.S_ISGID or any(k.startswith("system.posix_acl") for k in entry.xattrs):
            self._forget()  # it may be a cached parent that stops being plain
        try:
            os.mkdir(name, 0o700, dir_fd=dfd)
            merged = False
            self._fresh.add(phys)
        except FileExistsError:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                merged = True
            elif stat.S_ISLNK(st.st_mode) and self.options.keep_dirlinks and self._is_dirlink(phys):
                # usrmerge: keep the link; what goes below it is resolved inside the root.
                return
            else:
                self._replace(dfd, name, phys)
                os.mkdir(name, 0o700, dir_fd=dfd)
                merged = False
                self._fresh.add(phys)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        # New in a plain parent: it has our ids, no default ACL, and is setgid
        # only if the layer makes it so.
        plain = self._plain and not merged
        try:
            self._own(fd, entry, plain)
            os.fchmod(fd, mode)
            self._set_xattrs_fd(fd, entry, replace=merged)
        except BaseException:
            os.close(fd)
            raise
        self._dirmeta[phys] = (entry.mode, entry.atime_ns or entry.mtime_ns, entry.mtime_ns)
        if plain and not mode & stat.S_ISGID and not entry.xattrs:
            # Its children come next: this fd saves walking to it again.
            self._remember(entry.path, fd, phys, True, self._links)
        else:
            os.close(fd)

    def _is_dirlink(self, phys: str) -> bool:
        """Whether ``phys`` is a symlink that resolves to a directory inside the root."""
        try:
            fd, _ = self.walk(phys, create=False)
        except (FileNotFoundError, UnsafeEntryError):
            return False
        os.close(fd)
        return True

    def _write_symlink(self, dfd: int, name: str, phys: str, entry: Entry) -> None:
        try:
            os.symlink(entry.linkname, name, dir_fd=dfd)
        except FileExistsError:
            self._replace(dfd, name, phys)
            os.symlink(entry.linkname, name, dir_fd=dfd)
        self._own_by_name(dfd, name, entry)
        self._set_xattrs_link(dfd, name, entry)
        _set_times(dfd, name, entry)

    def _write_special(self, dfd: int, name: str, phys: str, entry: Entry) -> bool:
        if entry.kind is not Kind.FIFO and not self.privileged:
            self._replace(dfd, name, phys)
            self.notify("device_skipped", entry.path, "device nodes need root")
            return False
        device = os.makedev(entry.devmajor, entry.devminor)
        mode = _SPECIAL[entry.kind] | 0o600
        try:
            os.mknod(name, mode, device, dir_fd=dfd)
        except FileExistsError:
            self._replace(dfd, name, phys)
            os.mknod(name, mode, device, dir_fd=dfd)
        self._own_by_name(dfd, name, entry)
        # We just made this node and it is not a symlink, so chmod cannot follow one.
        os.chmod(name, entry.mode, dir_fd=dfd)
        self._set_xattrs_link(dfd, name, entry)
        _set_times(dfd, name, entry)
        return True

    def link(self, entry: Entry, target_path: str) -> str | None:
        """Hardlink ``entry`` to ``target_path``; ``None`` if the target does not exist yet.

        The target is resolved inside the root with its last component not
        followed, so a link to a symlink links the symlink itself.
        """
        if not entry.path:
            raise UnsafeEntryError("refusing to change the root directory into a hardlink")
        thead, _, tname = target_path.rpartition("/")
        try:
            tfd, tphys = self.walk(thead, create=False)
        except FileNotFoundError:
            return None
        try:
            self._sent_to(self.join(tphys, tname))
            try:
                st = os.stat(tname, dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                return None
            if stat.S_ISDIR(st.st_mode):
                raise BadInputError(f"hardlink to a directory: {target_path}")
            dfd, parent_phys, name = self.parent(entry.path)
            phys = self.join(parent_phys, name)
            if phys == self.join(tphys, tname):
                return phys  # a link to itself: already in place
            self._sent_to(phys)
            self._made.add(phys)  # it may link a symlink
            try:
                os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
            except FileExistsError:
                self._replace(dfd, name, phys)
                os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
            return phys
        finally:
            os.close(tfd)

    # -- metadata -----------------------------------------------------------

    def _ids(self, entry: Entry) -> tuple[int, int]:
        if not self._mapped:
            return entry.uid, entry.gid
        return (
            map_id(entry.uid, self.options.uid_maps, "uid"),
            map_id(entry.gid, self.options.gid_maps, "gid"),
        )

    def _own(self, fd: int, entry: Entry, plain: bool = False) -> None:
        """Set the owner of what ``fd`` opens; ``plain``: it was just created in a
        plain directory, so it already has our ids."""
        uid, gid = self._ids(entry)
        if self.privileged:
            if not plain or (uid, gid) != self._creator:
                os.fchown(fd, uid, gid)
        elif uid or gid:
            self._record_owner_fd(fd, entry, uid, gid)

    def _own_by_name(self, dfd: int, name: str, entry: Entry) -> None:
        uid, gid = self._ids(entry)
        if self.privileged:
            os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
        elif uid or gid:
            # Linux allows no user.* xattr on symlinks and special files, so the
            # owner cannot be recorded the umoci way: say so instead.
            self.notify("owner_not_recorded", entry.path, f"{uid}:{gid} (rootless)")

    def _record_owner_fd(self, fd: int, entry: Entry, uid: int, gid: int) -> None:
        # umoci's rootless convention: the owner we could not set, as an xattr.
        try:
            xattrs.set_on_fd(fd, "user.rootlesscontainers", xattrs.rootless_owner_record(uid, gid))
        except OSError as e:
            self._xattr_failed(entry, "user.rootlesscontainers", e)

    def _wanted_xattrs(self, entry: Entry) -> dict[str, bytes]:
        if self.privileged or not entry.xattrs:
            return entry.xattrs
        wanted = {}
        for key, value in entry.xattrs.items():
            if key.startswith(_PRIVILEGED_XATTRS) or key == "user.rootlesscontainers":
                # umoci drops a layer's own rootlesscontainers record too: ours is the truth.
                self.notify("xattr_skipped", entry.path, f"{key}: needs root (rootless)")
            else:
                wanted[key] = value
        return wanted

    def _set_xattrs_fd(self, fd: int, entry: Entry, replace: bool) -> None:
        wanted = self._wanted_xattrs(entry)
        if replace:
            # A directory entry over a directory replaces its xattrs: stale ones go.
            keep_owner = not self.privileged
            for key in xattrs.list_on_fd(fd):
                if key in wanted or (keep_owner and key == "user.rootlesscontainers"):
                    continue
                try:
                    xattrs.remove_on_fd(fd, key)
                except OSError as e:
                    self._xattr_failed(entry, key, e)
        for key, value in wanted.items():
            try:
                xattrs.set_on_fd(fd, key, value)
            except OSError as e:
                self._xattr_failed(entry, key, e)

    def _set_xattrs_link(self, dfd: int, name: str, entry: Entry) -> None:
        for key, value in self._wanted_xattrs(entry).items():
            try:
                xattrs.set_on_link(dfd, name, key, value)
            except OSError as e:
                self._xattr_failed(entry, key, e)

    def _xattr_failed(self, entry: Entry, key: str, e: OSError) -> None:
        if e.errno not in xattrs.TOLERATED:
            raise e
        self.notify("xattr_skipped", entry.path, f"{key}: {os.strerror(e.errno or 0)}")

    def finish(self) -> None:
        """Give directories their final mode and times, each after all below it.

        In component order (``/`` sorting before every other character) a
        directory comes just before everything below it, so it is done when
        the walk leaves it (a read-only directory is then never in the way),
        and each is opened once, from its nearest open ancestor, not from the
        root component by component. At most ``_HELD`` ancestors stay open: a
        deeper one is opened when it is done, so a tree thousands of levels
        deep needs no more fds.
        """
        self._forget()
        self._close_stale()
        # Root first: (physical path, its fd, _UNOPENED, or None if it cannot be opened).
        open_dirs: list[tuple[str, int | None]] = []
        held = 0
        try:
            for phys in sorted(self._dirmeta, key=lambda p: p.replace("/", "\0")):
                while open_dirs and not is_within(phys, open_dirs[-1][0]):
                    held -= self._finish_dir(open_dirs)
                fd = _UNOPENED if held >= _HELD else self._open_below(open_dirs, phys)
                held += 1 if fd is not None and fd >= 0 else 0
                open_dirs.append((phys, fd))
            while open_dirs:
                self._finish_dir(open_dirs)
        finally:
            for _, fd in open_dirs:
                if fd is not None and fd >= 0:
                    os.close(fd)
        self._dirmeta.clear()

    def _open_below(self, open_dirs: list[tuple[str, int | None]], phys: str) -> int | None:
        """Directory ``phys`` opened from its nearest open ancestor in ``open_dirs``."""
        for above, fd in reversed(open_dirs):
            if fd is None:
                return None  # an ancestor is gone, and so is all below it
            if fd >= 0:
                return _open_physical_dir(fd, phys[len(above) + 1 :] if above else phys)
        return _open_physical_dir(self.fd, phys)

    def _finish_dir(self, open_dirs: list[tuple[str, int | None]]) -> int:
        """Set the metadata of the last of ``open_dirs`` and drop it; 1 if it held an fd."""
        phys, fd = open_dirs.pop()
        held = fd is not None and fd >= 0
        if fd == _UNOPENED:
            fd = self._open_below(open_dirs, phys)
        if fd is None:
            return int(held)  # gone, or no longer a directory
        try:
            mode, atime, mtime = self._dirmeta[phys]
            os.fchmod(fd, mode)
            os.utime(fd, ns=(atime, mtime))
        finally:
            os.close(fd)
        return int(held)


_HELD = 64  # directory fds ``finish`` keeps open at once
# What opening a directory that was removed, replaced or locked meets.
_GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES})
_UNOPENED = -1  # a directory ``finish`` opens only when it is done


def _umask() -> int:
    """The process umask, read without changing it (Linux 4.7+), else by setting it back."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _open_physical_dir(start: int, phys: str) -> int | None:
    """Open directory ``phys`` below directory fd ``start``, following no symlink at
    all; ``None`` if a component is missing, not a directory, or not ours to enter.
    Anything else (out of fds, an I/O error) is raised, not taken for a gone directory."""
    fd = os.dup(start)
    for part in phys.split("/") if phys else []:
        try:
            nxt = os.open(
                part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
        except OSError as e:
            os.close(fd)
            if e.errno in _GONE:
                return None
            raise
        os.close(fd)
        fd = nxt
    return fd


def _has_children(fd: int) -> bool:
    with os.scandir(fd) as it:
        return next(it, None) is not None


def _children(fd: int) -> list[str]:
    with os.scandir(fd) as it:
        return [e.name for e in it]


def _set_times(dfd: int, name: str, entry: Entry) -> None:
    """Set a name's times without following it (symlinks keep their targets' times)."""
    times = (entry.atime_ns or entry.mtime_ns, entry.mtime_ns)
    os.utime(name, ns=times, dir_fd=dfd, follow_symlinks=False)
