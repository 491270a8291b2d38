"""The OCI changeset rules, as pure decisions: what an entry means for the tree.

``classify`` says what an entry is (content, whiteout, opaque marker, AUFS
bookkeeping); ``LayerState`` remembers, for one layer, what the rules need
to know about the entries before: which paths this layer wrote (a whiteout
only hides lower layers), which names came twice, and which hardlinks wait
for a target. No I/O here; ``apply`` and ``reverse`` act on the decisions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .errors import BadInputError, UnsafeEntryError
from .model import Entry, Kind
from .paths import PathSet

WH_PREFIX = ".wh."
WH_META_PREFIX = ".wh..wh."
OPAQUE = ".wh..wh..opq"
PLNK_DIR = ".wh..wh.plnk"  # AUFS keeps hardlinked files' content here


class Action(enum.Enum):
    """What an entry asks of the tree."""

    WRITE = "write"  # create or replace the entry's path
    WHITEOUT = "whiteout"  # delete target from lower layers
    OPAQUE = "opaque"  # hide lower layers' contents of target
    PLNK = "plnk"  # an AUFS hardlink store member: keep its content aside
    SKIP = "skip"  # AUFS bookkeeping: write nothing


# An ``__init__`` of its own, as one is made per entry and a dataclass-generated one
# runs interpreted even when mypyc compiles the module; and so not frozen, since
# mypyc refuses a written ``__init__`` in a frozen dataclass.
@dataclass(slots=True, init=False)
class Decision:
    """The action for one entry and the path it acts on (read, never changed)."""

    action: Action
    target: str

    def __init__(self, action: Action, target: str) -> None:
        self.action = action
        self.target = target


def classify(entry: Entry) -> Decision:
    """Decide what an entry is, refusing malformed whiteouts.

    A whiteout's target is its directory plus the name after ``.wh.``; a
    name that is empty, ``.`` or ``..`` would hit the directory itself or
    its parent and is refused, as containerd refuses it.
    """
    path = entry.path
    if WH_PREFIX not in path:
        return Decision(Action.WRITE, path)  # no whiteout or bookkeeping name: most entries
    head, _, base = path.rpartition("/")
    if path.startswith(WH_META_PREFIX) and path != OPAQUE:
        # AUFS bookkeeping at the top (.wh..wh.aufs, .wh..wh.orph/, .wh..wh.plnk/),
        # skipped as Docker skips it, except the content of hardlinked files.
        if head == PLNK_DIR and entry.kind is Kind.FILE:
            return Decision(Action.PLNK, path)
        return Decision(Action.SKIP, path)
    if f"/{WH_PREFIX}" in f"/{head}":
        raise BadInputError("a whiteout name used as a directory")
    if not base.startswith(WH_PREFIX):
        return Decision(Action.WRITE, path)
    if base == OPAQUE:
        return Decision(Action.OPAQUE, head)
    if base.startswith(WH_META_PREFIX):
        return Decision(Action.SKIP, path)
    name = base[len(WH_PREFIX) :]
    if name in ("", ".", ".."):
        raise UnsafeEntryError(f"malformed whiteout {base!r}")
    return Decision(Action.WHITEOUT, f"{head}/{name}" if head else name)


@dataclass
class LayerState:
    """What the rules remember while one layer streams by.

    ``upper`` holds the physical paths this layer has written and all their
    ancestors: a whiteout or opaque marker later in the same layer must leave
    them alone, because whiteouts only apply to lower layers (the spec:
    "Files that are present in the same layer as a whiteout file can only be
    hidden by whiteout files in subsequent layers"). A hash collision in
    this ``PathSet`` would only let such a whiteout spare one more lower
    path. ``seen`` catches duplicate names.

    ``link_target`` maps each hardlink this layer made (or could not make
    yet) to its target; ``links_to`` lists them by target. Whenever the layer
    writes a target, its links are made again, so a link listed before its
    target never keeps a lower layer's stale inode; links still unmade at
    the end of the layer are an error. A later entry at a link's path only
    leaves ``link_target``: ``links_to`` keeps the stale name until that
    target's links are next remade, which skips and sheds it. So every
    change is O(1), and a layer cannot make the bookkeeping quadratic.
    """

    upper: PathSet = field(default_factory=PathSet)
    seen: set[int] = field(default_factory=set)
    links_to: dict[str, list[str]] = field(default_factory=dict)
    link_target: dict[str, str] = field(default_factory=dict)
    unmade: set[str] = field(default_factory=set)

    def first_time(self, path: str) -> bool:
        """Record a name; False if this layer listed it before (last one wins).

        Names are kept as hashes: a layer of long names then costs 8 bytes a
        name, and a collision (about 2**-64) only misreports a duplicate.
        """
        key = hash(path)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def wrote(self, physical: str) -> None:
        """Record that this layer put something at ``physical``."""
        self.upper.add_with_ancestors(physical)

    def add_link(self, path: str, target: str, made: bool) -> None:
        """Record a hardlink from ``path`` to ``target``, made or still waiting."""
        if self.link_target.get(path) != target:
            self.link_target[path] = target
            self.links_to.setdefault(target, []).append(path)
        if made:
            self.unmade.discard(path)
        else:
            self.unmade.add(path)

    def drop_link(self, path: str) -> None:
        """``path`` is being written anew: it is no longer a link to remake."""
        if self.link_target.pop(path, None) is not None:
            self.unmade.discard(path)

    def links_of(self, target: str) -> list[str]:
        """The paths that are hardlinks to ``target`` now, each once, in link order."""
        listed = self.links_to.get(target)
        if not listed:
            return []
        current = self.link_target
        live = list(dict.fromkeys(p for p in listed if current.get(p) == target))
        if len(live) < len(listed):
            self.links_to[target] = live[:]  # shed names since rewritten or relinked
        return live
