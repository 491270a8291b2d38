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
    if not (name.startswith("/") or name.endswith("/") or "//" in name or "/." in "/" + name):
        return name  # already normal: the common case costs four scans
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
