"""Pure path logic: how tar member names map onto paths under the root.

No I/O here. The root-confined resolver in ``rootfs`` walks the results.
"""

from __future__ import annotations


def normalize(name: str) -> str:
    """Normalise a member name to a path relative to the root; ``""`` is the root.

    Leading ``/`` and ``./``, doubled and trailing slashes and ``.`` components
    go. ``..`` is clamped at the root, as a chroot clamps it: ``../../x`` is
    ``x`` and ``a/../../b`` is ``b``. This is lexical; symlinks are dealt with
    by the resolver, which clamps the same way.
    """
    if not (name.startswith(("/", ".")) or name.endswith("/") or "//" in name or "/." in name):
        return name  # already normal: the common case costs four scans, no copy
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def split(path: str) -> tuple[str, str]:
    """Split a normalised path into (parent, basename); the root has no basename."""
    head, _, tail = path.rpartition("/")
    return head, tail


def is_within(path: str, top: str) -> bool:
    """Whether normalised ``path`` is ``top`` or below it (``""`` contains all)."""
    return not top or path == top or path.startswith(top + "/")


def ancestors(path: str) -> list[str]:
    """The proper ancestors of a normalised path, nearest last, root (``""``) first."""
    out = [""]
    parts = path.split("/")
    for i in range(1, len(parts)):
        out.append("/".join(parts[:i]))
    return out if path else []


class PathSet:
    """A set of paths kept as their hashes, so the paths of a tree 10,000 levels deep cost
    10,000 small integers rather than 10,000 copies of ever longer prefixes.

    ``str`` hashes are keyed per process (SipHash), so a layer cannot be
    crafted to collide; a chance collision is about 2**-64; each user
    says what one would cost it.
    """

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: set[int] = set()

    def add(self, path: str) -> None:
        """Add one path."""
        self._keys.add(hash(path))

    def add_with_ancestors(self, path: str) -> None:
        """Add a path and its ancestors, stopping at the first one already in."""
        keys = self._keys
        while (key := hash(path)) not in keys:
            keys.add(key)
            if not path:
                return
            path = path.rpartition("/")[0]

    def __contains__(self, path: object) -> bool:
        return hash(path) in self._keys

    def __len__(self) -> int:
        return len(self._keys)
