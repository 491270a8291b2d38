"""Where and why two simulated trees differ: the conflict detector's kinds and sentences.

``compare`` takes the final in-memory trees of a chronological and a reverse
apply (``treemodel.MemRoot``) and lists every path whose type, symlink
target, content identity or hardlink grouping differs. Each difference gets
a kind, found in this order:

- a hardlink the reverse order made, or could not make, because of what a
  newer layer did to its target (``hardlink-target-replaced-by-symlink``,
  ``-by-file``, ``-by-directory``, ``hardlink-target-whited-out``,
  ``hardlink-target-hidden-by-opaque``), or because only an older layer has
  the target, which newest first is not there yet
  (``hardlink-target-from-older-layer``); the path is the link, below it, a
  directory it implied, or another name of an inode involved;
- ``symlink-loop`` instead, when the reverse tree's symlink at the path
  resolves into itself (kaniko #282);
- ``opaque-marker-not-applied``: oldest first an opaque marker makes (and
  keeps) its directory; newest first markers only hide older entries;
- ``implied-directory-not-made``: oldest first an entry below the path
  implied the directory; newest first that entry is skipped;
- ``hidden-by-newer-name``: a newer non-directory, whiteout or opaque marker
  hides, by name, the older entry that oldest first lands at the path;
- ``implicit-directory-replaced``: newer layers only implied a directory (by
  entries below it), so an older non-directory of that name is not skipped
  and replaces it, with what the newer layers put there;
- ``replacing-entry-skipped``: oldest first a non-directory entry above the
  path removed what was below it; newest first that entry is skipped;
- ``name-aliased-by-symlink``: an entry or whiteout reaches the path through
  a symlink, so it lands (or removes) elsewhere in the other order, or is
  not hidden by the name it is written as;
- ``order-dependent``: anything else.

``reverse-order-fails`` and ``chronological-order-fails`` (one order refuses
the stack) come from ``conflicts.detect_stack``, not from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .causes import Causes, Tree
from .errors import ExtractorError
from .model import Entry, Kind
from .reverse import Hide
from .treemodel import Dir, Leaf, MemRoot, Node


@dataclass(frozen=True, slots=True)
class Conflict:
    """One path where the two orders disagree.

    ``layers`` are layer numbers counted from 1, oldest first, as in error
    messages ("layer 2/3").
    """

    path: str
    kind: str
    layers: tuple[int, ...]
    explanation: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON object: ``path``, ``kind``, ``layers``, ``explanation``."""
        return {
            "path": self.path,
            "kind": self.kind,
            "layers": list(self.layers),
            "explanation": self.explanation,
        }


@dataclass(slots=True)
class LinkEvent:
    """A hardlink the reverse order made or tried: what its target held at that moment."""

    layer: int
    path: str
    target: str
    found: Node | None
    hide: Hide | None  # why newer layers hide the target's name, if they do


@dataclass(slots=True)
class Trace:
    """What the simulated reverse apply did: its hardlinks, and the entries it skipped."""

    events: list[LinkEvent] = field(default_factory=list)
    skipped: set[tuple[int, str]] = field(default_factory=set)  # (layer, entry path)
    below: dict[str, Hide] = field(default_factory=dict)  # the names that hide older entries


_CHANGE = {
    "hardlink-target-replaced-by-symlink": "replaced by a symlink",
    "hardlink-target-replaced-by-file": "replaced by another file",
    "hardlink-target-replaced-by-directory": "replaced by a directory",
    "hardlink-target-whited-out": "removed with a whiteout",
    "hardlink-target-hidden-by-opaque": "hid with an opaque marker",
}


def compare(
    chrono: MemRoot, rev: MemRoot, trace: Trace, stack: Sequence[Sequence[Entry]]
) -> list[Conflict]:
    """Every path where the reverse tree differs from the chronological one, explained."""
    return _Comparison(chrono, rev, trace, stack).conflicts()


def _signature(node: Node | None) -> tuple[object, ...]:
    if node is None:
        return ("missing",)
    if isinstance(node, Dir):
        return ("dir",)
    if node.kind is Kind.FILE:
        return ("file", node.origin)
    if node.kind is Kind.SYMLINK:
        return ("symlink", node.target)
    return (node.kind.value, node.device)


class _Comparison(Causes):
    def __init__(
        self,
        chrono: MemRoot,
        rev: MemRoot,
        trace: Trace,
        stack: Sequence[Sequence[Entry]],
    ):
        super().__init__(chrono, rev, trace.skipped, trace.below, stack)
        # Only the last attempt of a link counts (a link waiting for its target is retried).
        last = {(ev.layer, ev.path, ev.target): ev for ev in trace.events}
        self.events = list(last.values())

    def conflicts(self) -> list[Conflict]:
        out = []
        for path in sorted(set(self.chrono.nodes) | set(self.rev.nodes)):
            c, r = self.chrono.nodes.get(path), self.rev.nodes.get(path)
            if _signature(c) != _signature(r) or self.chrono.group(path) != self.rev.group(path):
                out.append(self._explain(path, c, r))
        return out

    # -- what each tree holds -------------------------------------------------

    def _describe(self, tree: Tree, path: str, node: Node | None) -> str:
        if node is None:
            return "missing"
        if isinstance(node, Dir):
            return "a directory"
        notes = []
        if node.kind is Kind.FILE:
            text = f"layer {node.origin.layer + 1}'s file"
            if node.origin.path != path:
                text += f" {node.origin.path}"
        elif node.kind is Kind.SYMLINK:
            text = f"a symlink to {node.target}"
            if tree.mem.resolve_loops(path):
                notes.append("a loop")
        else:
            text = f"a {node.kind.value} node"
        others = sorted(tree.group(path) - {path})
        if others:
            notes.append(f"one inode with {', '.join(others)}")
        return f"{text} ({'; '.join(notes)})" if notes else text

    def _outcome(self, path: str, c: Node | None, r: Node | None) -> str:
        return (
            f"{path} is {self._describe(self.rev, path, r)} "
            f"instead of {self._describe(self.chrono, path, c)}"
        )

    # -- why ------------------------------------------------------------------

    def _explain(self, path: str, c: Node | None, r: Node | None) -> Conflict:
        loop = (
            isinstance(r, Leaf)
            and r.kind is Kind.SYMLINK
            and self.rev.mem.resolve_loops(path)
            and not self.chrono.mem.resolve_loops(path)
        )
        outcome = self._outcome(path, c, r)
        hit = self._link_cause(path)
        if hit is not None:
            ev, kind, other = hit
            layers = (ev.layer + 1, other + 1)
            head = f"Layer {ev.layer + 1} hardlinks {ev.path} to {ev.target}, which"
            if kind == "hardlink-target-from-older-layer":
                text = (
                    f"{head} only layer {other + 1} provides; newest first that layer comes "
                    f"later, so the link finds no target and is not made, and {outcome}."
                )
            else:
                change = _CHANGE[kind]
                if isinstance(ev.found, Leaf) and ev.found.kind is Kind.SYMLINK:
                    change += f" to {ev.found.target}"
                if isinstance(ev.found, Leaf):
                    effect = f"is made to what layer {other + 1} put there"
                elif isinstance(ev.found, Dir):
                    effect = "cannot be made"
                else:
                    effect = "finds no target and is not made"
                text = (
                    f"{head} layer {other + 1} {change}; newest first the link {effect}, "
                    f"so {outcome}."
                )
            return Conflict(path, "symlink-loop" if loop else kind, _layers(layers), text)
        kind, why, involved = self._generic(path, c, r)
        involved += [n.origin.layer + 1 for n in (c, r) if n is not None and n.origin.layer >= 0]
        return Conflict(
            path,
            "symlink-loop" if loop else kind,
            _layers(involved),
            f"Newest first, {why}, so {outcome}.",
        )

    def _link_cause(self, path: str) -> tuple[LinkEvent, str, int] | None:
        best: tuple[LinkEvent, str, int] | None = None
        for ev in self.events:
            cause = self._cause(ev)
            if cause is None:
                continue
            if ev.path == path:
                return cause
            if best is None and self._affects(path, ev):
                best = cause
        return best

    def _affects(self, path: str, ev: LinkEvent) -> bool:
        """Whether ``path``, or another name of its inode, is the link, below it or linked
        with it in either tree, or a directory the link implied oldest first."""
        link = self._physical(ev.path)
        names = {path} | self.rev.group(path) | self.chrono.group(path)
        return any(
            name == link
            or name.startswith(link + "/")
            or name in self.rev.group(link)
            or name in self.chrono.group(link)
            or self._implied_by(name, ev)
            for name in names
        )

    def _physical(self, path: str) -> str:
        """Where ``path`` lands in the chronological tree (its parents' symlinks followed)."""
        head, _, name = path.rpartition("/")
        try:
            _, phys = self.chrono.mem.walk(head, create=False)
        except (ExtractorError, OSError):
            return path
        return f"{phys}/{name}" if phys else name

    def _implied_by(self, path: str, ev: LinkEvent) -> bool:
        """Whether oldest first the link ``ev`` made the directory ``path``, or landed below it."""
        node = self.chrono.nodes.get(path)
        if not isinstance(node, Dir):
            return False
        if (node.origin.layer, node.origin.path) == (ev.layer, ev.path):
            return True
        places = self.chrono.placed_by.get((ev.layer, ev.path), ())
        return any(place.startswith(path + "/") for place in places)

    def _cause(self, ev: LinkEvent, depth: int = 0) -> tuple[LinkEvent, str, int] | None:
        """The trouble a hardlink met newest first: the link that met it (``ev``, or the
        link ``ev`` points at, which its layer made first), the kind, and the other layer."""
        found, hide = ev.found, ev.hide
        if isinstance(found, Dir):
            newer = found.origin.layer
            if newer <= ev.layer:
                newer = hide.layer if hide is not None else ev.layer
            return ev, "hardlink-target-replaced-by-directory", newer
        if isinstance(found, Leaf):
            if found.origin.layer <= ev.layer:
                return None
            if found.kind is Kind.SYMLINK:
                return ev, "hardlink-target-replaced-by-symlink", found.origin.layer
            return ev, "hardlink-target-replaced-by-file", found.origin.layer
        if hide is not None:
            kinds = {
                "whiteout": "hardlink-target-whited-out",
                "opaque": "hardlink-target-hidden-by-opaque",
                "symlink": "hardlink-target-replaced-by-symlink",
                "dir": "hardlink-target-replaced-by-directory",
            }
            return ev, kinds.get(hide.why, "hardlink-target-replaced-by-file"), hide.layer
        older = [i for i in self._provider_layers(ev.target) if i < ev.layer]
        if older:
            return ev, "hardlink-target-from-older-layer", older[-1]
        if depth < 8:
            # The target is another link of this layer that could not be made either.
            for other in self.events:
                if other.layer == ev.layer and other.path == ev.target and other is not ev:
                    cause = self._cause(other, depth + 1)
                    if cause is not None:
                        return cause
        return None


def _layers(numbers: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(set(numbers)))
