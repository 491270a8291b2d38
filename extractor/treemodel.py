"""An in-memory tree that behaves like ``rootfs.Root``, for simulating an apply.

``MemRoot`` offers the part of ``Root``'s interface the layer drivers use
(``write``, ``link``, ``remove``, ``clear_dir``, ``notify``, ``walk``), with
the same resolution rules: symlinks followed one component at a time inside
the root, ``..`` and absolute targets clamped at the root, at most
``limits.SYMLINKS`` links, a non-directory parent replaced by a directory, the last
component never followed, a hardlink to a symlink linking the symlink. It
writes nothing: the conflict detector runs the engine's own drivers on it to
predict the tree each layer order gives, from the tar headers alone.

Every node remembers its ``Origin``: the layer and entry that made it, so a
file's content identity is "the bytes of that entry". Hardlinks share one
node, as names share an inode.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field

from .errors import BadInputError, UnsafeEntryError
from .limits import SYMLINKS
from .model import Entry, Kind, ReadData

NAME_MAX = 255  # bytes in one component, as on ext4, xfs and tmpfs
SYMLINK_MAX = 4095  # bytes in a symlink target


@dataclass(frozen=True, slots=True)
class Origin:
    """The entry that made a node: its layer (0-based, oldest first), path and index there.

    Two entries of one layer may name the same path; the index tells their bytes apart.
    """

    layer: int
    path: str
    entry: int = -1


@dataclass(eq=False, slots=True)
class Leaf:
    """A non-directory. Names that share a ``Leaf`` are hardlinks of one inode."""

    kind: Kind
    origin: Origin
    target: str = ""  # a symlink's target, verbatim
    device: tuple[int, int] = (0, 0)


@dataclass(eq=False, slots=True)
class Dir:
    """A directory and its children by name."""

    origin: Origin
    children: dict[str, Dir | Leaf] = field(default_factory=dict)
    last: int = -1  # the layer of the last entry that wrote it (it may merge several)

    def __post_init__(self) -> None:
        self.last = max(self.last, self.origin.layer)


Node = Dir | Leaf


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _check_name(name: str) -> None:
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise OSError(errno.ENAMETOOLONG, "File name too long", name)


class MemRoot:
    """A tree in memory with ``Root``'s rules; ``origin`` is the entry being applied."""

    def __init__(
        self,
        privileged: bool = True,
        keep_dirlinks: bool = False,
        notify: Callable[[str, str, str], None] | None = None,
    ):
        self.privileged = privileged
        self.keep_dirlinks = keep_dirlinks
        self.origin = Origin(-1, "")
        self.top = Dir(self.origin)
        self._notify = notify
        # Where each entry landed (its physical path), by the entry that made it.
        self.placed: dict[Origin, str] = {}
        self.removed: dict[Origin, str] = {}  # what each whiteout removed

    def notify(self, event: str, path: str, detail: str) -> None:
        """Pass a tolerated loss on, like ``Root.notify``."""
        if self._notify is not None:
            self._notify(event, path, detail)

    def finish(self) -> None:
        """Directory metadata is not modelled: nothing to do."""

    def start_helper(self) -> None:
        """Nothing is written to disk here: no helper process (``Root.start_helper``)."""

    def settle(self) -> None:
        """No helper writes here: nothing is ever pending (``Root.settle``)."""

    def close(self) -> None:
        """Nothing to release."""

    # -- resolution ---------------------------------------------------------

    def walk(self, path: str, create: bool) -> tuple[Dir, str]:
        """The directory ``path`` resolves to, and its physical path (``Root.walk``)."""
        todo = path.split("/")[::-1] if path else []
        stack: list[Dir] = [self.top]
        names: list[str] = []
        links = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if names:
                    names.pop()
                    stack.pop()
                continue
            _check_name(part)
            cur = stack[-1]
            node = cur.children.get(part)
            if isinstance(node, Dir):
                stack.append(node)
                names.append(part)
            elif node is None:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, "No such file or directory", part)
                cur.children[part] = Dir(self.origin)
                todo.append(part)
            elif node.kind is Kind.SYMLINK:
                links += 1
                if links > SYMLINKS:
                    raise UnsafeEntryError(f"too many levels of symbolic links resolving {path!r}")
                if node.target.startswith("/"):
                    del stack[1:]
                    names.clear()
                todo.extend(node.target.split("/")[::-1])
            else:
                if not create:
                    raise FileNotFoundError(errno.ENOTDIR, "not a directory", part)
                del cur.children[part]
                todo.append(part)
        return stack[-1], "/".join(names)

    def parent(self, path: str) -> tuple[Dir, str, str]:
        """(directory, its physical path, basename) for an entry path, created as needed."""
        head, _, name = path.rpartition("/")
        directory, phys = self.walk(head, create=True)
        return directory, phys, name

    def lookup(self, path: str) -> Node | None:
        """What is at ``path`` without following its last component; ``None`` if nothing."""
        if not path:
            return self.top
        head, _, name = path.rpartition("/")
        try:
            directory, _ = self.walk(head, create=False)
        except FileNotFoundError:
            return None
        _check_name(name)
        return directory.children.get(name)

    def resolve_loops(self, path: str) -> bool:
        """Whether following ``path`` completely runs into too many symlinks."""
        try:
            self.walk(path, create=False)
        except UnsafeEntryError:
            return True
        except OSError:
            return False
        return False

    # -- removal ------------------------------------------------------------

    @staticmethod
    def _remove(directory: Dir, name: str, phys: str, keep: Container[str] | None) -> None:
        """Remove ``name`` and, for a directory, all below it except ``keep``."""
        _check_name(name)
        node = directory.children.get(name)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", name)
        kept = keep is not None and phys in keep
        if isinstance(node, Leaf):
            if not kept:
                del directory.children[name]
            return
        MemRoot._remove_dir(node, phys, keep)
        if not kept:
            del directory.children[name]

    @staticmethod
    def _remove_dir(top: Dir, phys: str, keep: Container[str] | None) -> None:
        """Empty ``top`` of everything not in ``keep`` (a kept name keeps its ancestors)."""
        todo: list[tuple[Dir, str]] = [(top, phys)]
        while todo:
            directory, dphys = todo.pop()
            for name, node in list(directory.children.items()):
                cphys = _join(dphys, name)
                kept = keep is not None and cphys in keep
                if isinstance(node, Dir):
                    todo.append((node, cphys))
                    if not kept:
                        # Its children go too (they cannot be kept if it is not).
                        del directory.children[name]
                elif not kept:
                    del directory.children[name]

    def remove(self, path: str, keep: Container[str]) -> str | None:
        """A whiteout: ``Root.remove``."""
        head, _, name = path.rpartition("/")
        try:
            directory, phys = self.walk(head, create=False)
        except FileNotFoundError:
            return None
        target = _join(phys, name)
        try:
            self._remove(directory, name, target, keep)
        except FileNotFoundError:
            return None
        self.removed[self.origin] = target
        return target

    def clear_dir(self, path: str, keep: Container[str]) -> str:
        """An opaque marker: ``Root.clear_dir``."""
        directory, phys = self.walk(path, create=True)
        self._remove_dir(directory, phys, keep)
        self.placed[self.origin] = phys
        return phys

    def _replace(self, directory: Dir, name: str, phys: str) -> None:
        try:
            self._remove(directory, name, phys, None)
        except FileNotFoundError:
            pass

    # -- creation -----------------------------------------------------------

    def write(self, entry: Entry, read: ReadData) -> str | None:
        """Create ``entry`` (not a hardlink): ``Root.write``."""
        phys = self._write(entry)
        if phys is not None:
            self.placed[self.origin] = phys
        return phys

    def _write(self, entry: Entry) -> str | None:
        if not entry.path:
            if entry.kind is not Kind.DIR:
                raise UnsafeEntryError(
                    f"refusing to change the root directory into a {entry.kind.value}"
                )
            return ""
        directory, parent_phys, name = self.parent(entry.path)
        _check_name(name)
        phys = _join(parent_phys, name)
        kind = entry.kind
        old = directory.children.get(name)
        if kind is Kind.DIR:
            if isinstance(old, Dir):
                old.last = self.origin.layer
                return phys  # merged: keeps its children (and its origin)
            if (
                isinstance(old, Leaf)
                and old.kind is Kind.SYMLINK
                and self.keep_dirlinks
                and self._is_dirlink(phys)
            ):
                return phys
            self._replace(directory, name, phys)
            directory.children[name] = Dir(self.origin)
            return phys
        if kind is Kind.SYMLINK:
            if not entry.linkname:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", name)
            if len(entry.linkname.encode("utf-8", "surrogateescape")) > SYMLINK_MAX:
                raise OSError(errno.ENAMETOOLONG, "File name too long", name)
            self._replace(directory, name, phys)
            directory.children[name] = Leaf(kind, self.origin, target=entry.linkname)
            return phys
        if kind is not Kind.FILE and kind is not Kind.FIFO and not self.privileged:
            self._replace(directory, name, phys)
            self.notify("device_skipped", entry.path, "device nodes need root")
            return None
        self._replace(directory, name, phys)
        device = (entry.devmajor, entry.devminor) if kind in (Kind.CHAR, Kind.BLOCK) else (0, 0)
        directory.children[name] = Leaf(kind, self.origin, device=device)
        return phys

    def _is_dirlink(self, phys: str) -> bool:
        try:
            self.walk(phys, create=False)
        except (FileNotFoundError, UnsafeEntryError):
            return False
        return True

    def link(self, entry: Entry, target_path: str) -> str | None:
        """Hardlink ``entry`` to ``target_path``: ``Root.link``."""
        phys = self._link(entry, target_path)
        if phys is not None:
            self.placed[self.origin] = phys
        return phys

    def _link(self, entry: Entry, target_path: str) -> str | None:
        if not entry.path:
            raise UnsafeEntryError("refusing to change the root directory into a hardlink")
        thead, _, tname = target_path.rpartition("/")
        try:
            tdir, tphys = self.walk(thead, create=False)
        except FileNotFoundError:
            return None
        if tname:
            _check_name(tname)
        node = tdir.children.get(tname) if tname else None
        if node is None:
            return None
        if isinstance(node, Dir):
            raise BadInputError(f"hardlink to a directory: {target_path}")
        directory, parent_phys, name = self.parent(entry.path)
        _check_name(name)
        phys = _join(parent_phys, name)
        if phys == _join(tphys, tname):
            return phys
        if name in directory.children:
            self._replace(directory, name, phys)
        node = tdir.children.get(tname)  # making room may have taken the target
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", tname)
        if isinstance(node, Dir):
            raise PermissionError(errno.EPERM, "Operation not permitted", tname)
        directory.children[name] = node
        return phys

    # -- the result -----------------------------------------------------------

    def items(self) -> Iterator[tuple[str, Node]]:
        """Every (physical path, node) below the root, parents before children."""
        todo: list[tuple[str, Dir]] = [("", self.top)]
        while todo:
            phys, directory = todo.pop()
            for name, node in directory.children.items():
                path = _join(phys, name)
                yield path, node
                if isinstance(node, Dir):
                    todo.append((path, node))
