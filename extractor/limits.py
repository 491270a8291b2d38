"""The bounds a hostile layer meets, in one place, each configurable per apply.

Every bound is a one-line ``BadInputError`` (or ``UnsafeEntryError`` for a
symlink loop) naming the layer and entry, never a hang or an exhausted
machine. The defaults are far above what real images need and keep one
apply's bookkeeping near a few hundred MiB at worst; the README's Limits
section lists what each costs.
"""

from __future__ import annotations

from dataclasses import dataclass

PATH_BYTES = 64 << 10
HEADER_BYTES = 16 << 20
SYMLINKS = 40  # Linux's MAXSYMLINKS
HARDLINKS = 500_000
ENTRIES = 2_000_000


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-apply bounds.

    ``path_bytes``: the longest entry path or hardlink target, in bytes (16
    times Linux's PATH_MAX, so paths thousands of levels deep still apply,
    while one header cannot make every later check work on megabytes).
    ``header_bytes``: the largest PAX header, GNU long name or sparse map.
    ``symlinks``: symlinks followed while resolving one path inside the root.
    ``hardlinks``: hardlinks made in one layer, counting those remade when
    their target is written again (each is kept until the layer ends, so
    this bounds memory and time). ``entries``: tar members in one layer
    (the rules remember each one's path until the layer ends).
    ``layer_bytes``: a layer's uncompressed size, none by default (real
    layers run to many GB; the time a decompression bomb takes grows only
    with what it writes, and a full disk ends it cleanly), for sandboxes
    that want one.
    """

    path_bytes: int = PATH_BYTES
    header_bytes: int = HEADER_BYTES
    symlinks: int = SYMLINKS
    hardlinks: int = HARDLINKS
    entries: int = ENTRIES
    layer_bytes: int | None = None
