"""Why a path differs when no hardlink explains it: the generic kinds of ``explain``.

``Causes`` holds the two final trees of a comparison and what the simulated
reverse apply did, and finds the mechanism behind one difference: an opaque
marker that creates nothing newest first, a directory that only an entry the
reverse order skips implied, a newer name that hides an older entry, an
older non-directory that replaces a directory newer layers implied, a
skipped entry that oldest first replaced what was below it, or an entry that
reaches the path through a symlink. ``explain._Comparison`` builds on it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .changeset import OPAQUE
from .model import Entry, Kind
from .paths import ancestors
from .reverse import Hide
from .treemodel import Dir, Leaf, MemRoot, Node, Origin


class Tree:
    """A final tree: path -> node, and the names of each non-directory's inode."""

    def __init__(self, mem: MemRoot):
        self.mem = mem
        self.nodes: dict[str, Node] = dict(mem.items())
        by_leaf: dict[int, list[str]] = {}
        for path, node in self.nodes.items():
            if isinstance(node, Leaf):
                by_leaf.setdefault(id(node), []).append(path)
        self.groups = {p: frozenset(g) for g in by_leaf.values() for p in g}
        self.placed_at: dict[str, set[Origin]] = {}  # physical path -> entries that landed there
        self.placed_by: dict[tuple[int, str], list[str]] = {}  # (layer, entry path) -> places
        for origin, phys in mem.placed.items():
            self.placed_at.setdefault(phys, set()).add(origin)
            self.placed_by.setdefault((origin.layer, origin.path), []).append(phys)

    def group(self, path: str) -> frozenset[str]:
        return self.groups.get(path, frozenset())


def _is_marker(entry_path: str) -> bool:
    return entry_path == OPAQUE or entry_path.endswith("/" + OPAQUE)


class Causes:
    """The trees of a comparison, and the generic causes of a difference between them."""

    def __init__(
        self,
        chrono: MemRoot,
        rev: MemRoot,
        skipped: set[tuple[int, str]],
        below: dict[str, Hide],
        stack: Sequence[Sequence[Entry]],
    ):
        self.chrono = Tree(chrono)
        self.rev = Tree(rev)
        self.skipped = skipped  # (layer, entry path) the reverse order skipped
        self.below = below  # names that, at the end, hide older entries below them
        self.markers = sorted(
            ((o, p) for o, p in chrono.placed.items() if _is_marker(o.path)),
            key=lambda item: _order(item[0]),
        )
        self.stack = stack
        self._providers: dict[str, list[int]] | None = None

    def _generic(self, path: str, c: Node | None, r: Node | None) -> tuple[str, str, list[int]]:
        if isinstance(c, Dir) and not isinstance(r, Dir):
            for marker, phys in self.markers:
                if phys == path or phys.startswith(path + "/") or marker == c.origin:
                    keeps = "" if phys == path else f" and keeps {path}"
                    return (
                        "opaque-marker-not-applied",
                        f"layer {marker.layer + 1}'s opaque marker {marker.path}, which oldest "
                        f"first makes the directory {phys or '/'}{keeps}, only hides lower "
                        "entries and creates nothing",
                        [marker.layer + 1],
                    )
        origin = c.origin if c is not None else None
        if (
            isinstance(c, Dir)
            and r is None
            and origin is not None
            and origin.path.startswith(path + "/")
            and (origin.layer, origin.path) in self.skipped
        ):
            return (
                "implied-directory-not-made",
                f"layer {origin.layer + 1}'s entry {origin.path}, which oldest first implies "
                "this directory, is skipped because a newer layer settles that name",
                [],
            )
        for name in sorted({path} | self.chrono.group(path) | self.rev.group(path)):
            replaced = self._replaced_directory(name)
            if replaced is not None:
                at, leaf = replaced
                return (
                    "implicit-directory-replaced",
                    f"layer {leaf.origin.layer + 1}'s entry {leaf.origin.path} is not skipped, "
                    f"as newer layers only have entries below {at}, none named {at}, and it "
                    "replaces the directory they implied",
                    [leaf.origin.layer + 1],
                )
        for name in sorted({path} | self.chrono.group(path)):
            newer = self._layer_at(name)
            older = self._older_replacer(name, newer) if newer >= 0 else None
            if older is not None:
                at, layer = older
                return (
                    "implicit-directory-replaced",
                    f"layer {layer + 1}'s entry {at} is not skipped, as newer layers only have "
                    f"entries below {at}, none named {at}, and it replaces the directory they "
                    "implied",
                    [layer + 1],
                )
        if r is not None and c is None and r.origin.layer >= 0:
            skipped = self._skipped_replacer(path, r.origin.layer)
            if skipped is not None:
                at, layer = skipped
                return (
                    "replacing-entry-skipped",
                    f"layer {layer + 1}'s entry {at}, which oldest first replaces what is below "
                    "it, is skipped because a newer layer settles that name",
                    [layer + 1],
                )
        if c is not None:
            hidden = self._hidden_by_name(path, c)
            if hidden is not None:
                return hidden
        origins = [n.origin for n in (r, c) if n is not None]
        for name in _and_above(path):
            origins += sorted(self.chrono.placed_at.get(name, ()), key=_order)
            origins += sorted(self.rev.placed_at.get(name, ()), key=_order)
        for origin in origins:
            early = self.chrono.mem.placed.get(origin)
            late = self.rev.mem.placed.get(origin)
            if early is not None and late is not None and early != late:
                return (
                    "name-aliased-by-symlink",
                    f"layer {origin.layer + 1}'s entry {origin.path} lands at {early or '/'} "
                    f"oldest first but at {late or '/'} newest first, as the symlinks on its "
                    "way differ",
                    [origin.layer + 1],
                )
        removals = sorted(self.chrono.mem.removed.items(), key=lambda item: _order(item[0]))
        for whiteout, removed in removals:
            head, _, base = whiteout.path.rpartition("/")
            named = f"{head}/{base[4:]}" if head else base[4:]
            if named != removed and (path == removed or path.startswith(removed + "/")):
                return (
                    "name-aliased-by-symlink",
                    f"layer {whiteout.layer + 1}'s whiteout {whiteout.path} removes {removed} "
                    f"through a symlink oldest first, while newest first it only hides the "
                    f"name {named}",
                    [whiteout.layer + 1],
                )
        for name in sorted({path} | self.chrono.group(path) | self.rev.group(path)):
            for tree in (self.rev, self.chrono):
                for origin in sorted(tree.placed_at.get(name, ()), key=_order):
                    if _named(origin) != name:
                        return (
                            "name-aliased-by-symlink",
                            f"layer {origin.layer + 1}'s entry {origin.path} lands at {name} "
                            "through a symlink, while newest first entries are hidden and "
                            "skipped by the names they are written as",
                            [origin.layer + 1],
                        )
        for tree, node in ((self.rev, r), (self.chrono, c)):
            if node is None or node.origin.layer < 0 or self._named_as(path, node, tree):
                continue
            return (
                "name-aliased-by-symlink",
                f"layer {node.origin.layer + 1}'s entry {node.origin.path} reaches {path} "
                "through a symlink, while entries are skipped by the names they are written as",
                [],
            )
        return ("order-dependent", "entries are skipped by the names they are written as", [])

    def _layer_at(self, name: str) -> int:
        """The newest layer whose entry put what is at ``name`` oldest first; -1 if none."""
        node = self.chrono.nodes.get(name)
        if node is None:
            return -1
        layers = [o.layer for o in self.chrono.placed_at.get(name, ())]
        layers.append(node.last if isinstance(node, Dir) else node.origin.layer)
        return max(layers)

    def _replaced_directory(self, path: str) -> tuple[str, Leaf] | None:
        """The nearest name at or above ``path`` that is a directory oldest first and an
        older layer's non-directory newest first."""
        for name in [path, *reversed(ancestors(path))]:
            if not name:
                return None
            leaf = self.rev.nodes.get(name)
            if leaf is None or isinstance(leaf, Dir):
                continue
            return (name, leaf) if isinstance(self.chrono.nodes.get(name), Dir) else None
        return None

    def _hidden_by_name(self, path: str, c: Node) -> tuple[str, str, list[int]] | None:
        """A newer name that hides the entry that put ``c`` (or a name of its inode) here."""
        origins = [c.origin]
        for name in sorted({path} | self.chrono.group(path)):
            origins += sorted(self.chrono.placed_at.get(name, ()), key=_order)
        for origin in origins:
            if origin.layer < 0 or (origin.layer, origin.path) not in self.skipped:
                continue
            for name in _and_above(origin.path)[1:]:
                hide = self.below.get(name)
                if hide is not None and hide.layer > origin.layer:
                    what = "an opaque marker in" if hide.why == "opaque" else f"a {hide.why} at"
                    return (
                        "hidden-by-newer-name",
                        f"layer {hide.layer + 1} has {what} {name}, which hides every older "
                        f"entry below {name} by name, such as layer {origin.layer + 1}'s "
                        f"{origin.path}",
                        [hide.layer + 1, origin.layer + 1],
                    )
        return None

    def _older_replacer(self, path: str, newer: int) -> tuple[str, int] | None:
        """A non-directory entry at or above ``path`` in a layer older than ``newer`` that
        the reverse order applied (did not skip): newest first it lands on what the newer
        layers put below it. ``path`` is tried as it is and as the newer entry wrote it."""
        node = self.chrono.nodes.get(path)
        written = node.origin.path if node is not None else path
        for name in _and_above(path) + _and_above(written):
            for layer in reversed(self._provider_layers(name)):
                if layer < newer and (layer, name) not in self.skipped:
                    return name, layer
        return None

    def _skipped_replacer(self, path: str, oldest: int) -> tuple[str, int] | None:
        """A non-directory entry above ``path``, in layer ``oldest`` or a newer one, that
        the reverse order skipped."""
        for name in _and_above(path)[1:]:
            for layer in self._provider_layers(name):
                if layer >= oldest and (layer, name) in self.skipped:
                    return name, layer
        return None

    @staticmethod
    def _named_as(path: str, node: Node, tree: Tree) -> bool:
        """Whether the entry that made ``node`` names ``path`` (or, for a directory, below it)."""
        origin = node.origin.path
        if origin == path:
            return True
        if isinstance(node, Dir):
            return origin.startswith(path + "/")
        return len(tree.group(path)) > 1  # another name of a hardlinked inode

    def _provider_layers(self, path: str) -> list[int]:
        if self._providers is None:
            self._providers = {}
            for index, entries in enumerate(self.stack):
                for entry in entries:
                    if entry.kind is not Kind.DIR:
                        layers = self._providers.setdefault(entry.path, [])
                        if not layers or layers[-1] != index:
                            layers.append(index)
        return self._providers.get(path, [])


def _named(origin: Origin) -> str:
    """The path an entry names: an opaque marker names its directory."""
    if _is_marker(origin.path):
        return origin.path.rpartition("/")[0] if "/" in origin.path else ""
    return origin.path


def _order(origin: Origin) -> tuple[int, int, str]:
    return origin.layer, origin.entry, origin.path


def _and_above(path: str) -> list[str]:
    """``path`` and its ancestors, nearest first, without the root."""
    return [path, *(a for a in reversed(ancestors(path)) if a)]
