"""Choosing one image from an archive or index: by reference and by platform.

The rules follow what users know from docker, skopeo and containerd:

* A reference matches an index entry's ``org.opencontainers.image.ref.name``
  (often just a tag), its ``io.containerd.image.name`` (a full name) or a
  ``manifest.json`` ``RepoTags`` entry, exactly or after docker's name
  normalisation (``busybox`` is ``docker.io/library/busybox:latest``).
  ``@N`` picks the N-th top-level entry, zero-based, like skopeo.
* A platform request ``os/arch[/variant]`` compares only the fields it
  gives; ``arm64`` means ``arm64/v8`` and ``arm`` ``arm/v7`` (containerd).
* With no request, an entry with a single available image takes it;
  otherwise the host's platform decides, and the first match wins
  (image-index.md). Attestation manifests are never candidates.
* When nothing, or more than one distinct image, remains, a ``NotFoundError``
  lists what the archive holds.
"""

from __future__ import annotations

import platform as host
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import NotFoundError
from .model import Platform

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "i386": "386",
    "i686": "386",
    "armhf": "arm",
    "armel": "arm",
}
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}
_HOST_ARM = {"armv7l": "v7", "armv6l": "v6", "armv5tel": "v5"}


def normalize_platform(p: Platform) -> Platform:
    """Canonical spelling: ``x86_64`` → ``amd64``, ``arm64`` → ``arm64/v8``, lower case."""
    arch = _ARCH_ALIASES.get(p.architecture.lower(), p.architecture.lower())
    variant = p.variant.lower() or _DEFAULT_VARIANT.get(arch, "")
    return Platform(p.os.lower(), arch, variant)


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]`` as a ``Platform``; ``ValueError`` for anything else.

    The variant is left empty when not given: a request compares only the
    fields it names (``linux/arm`` accepts any arm variant).
    """
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform {text!r} is not os/arch[/variant]")
    os_name, arch = parts[0].lower(), parts[1].lower()
    arch = _ARCH_ALIASES.get(arch, arch)
    return Platform(os_name, arch, parts[2].lower() if len(parts) == 3 else "")


def host_platform() -> Platform:
    """The platform images default to here: linux on this machine's architecture."""
    machine = host.machine().lower()
    if machine in _HOST_ARM:
        return Platform("linux", "arm", _HOST_ARM[machine])
    arch = _ARCH_ALIASES.get(machine, machine)
    return Platform("linux", arch, _DEFAULT_VARIANT.get(arch, ""))


def platform_matches(want: Platform, have: Platform) -> bool:
    """Whether ``have`` satisfies the request ``want`` (fields ``want`` leaves empty match)."""
    have = normalize_platform(have)
    return (
        want.os == have.os
        and want.architecture == have.architecture
        and (not want.variant or want.variant == have.variant)
    )


def normalize_name(ref: str) -> str | None:
    """A docker reference as ``domain/path[:tag][@digest]``, tag ``latest`` by default."""
    if not ref or any(c.isspace() for c in ref):
        return None
    name, _, digest = ref.partition("@")
    tag = ""
    head, slash, last = name.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
    name = head + slash + last
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        domain, path = parts[0], "/".join(parts[1:])
    else:
        domain, path = "docker.io", name
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    if not tag and not digest:
        tag = "latest"
    return f"{domain}/{path}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def ref_matches(want: str, names: Sequence[str]) -> bool:
    """Whether the requested reference names an entry known by ``names``."""
    if want in names:
        return True
    norm = normalize_name(want)
    return norm is not None and any(normalize_name(n) == norm for n in names)


@dataclass(frozen=True)
class Candidate:
    """One image manifest an archive offers, before anything is read from it.

    ``position`` is the top-level entry it came from (an ``index.json`` or
    ``manifest.json`` entry), what ``@N`` counts. ``image`` says which
    candidates are platforms of one image (the choice among them is by
    platform) and which are different images (the choice is by ref). ``key``
    is what the reader needs to load it; ``platform`` is ``None`` until known.
    """

    position: int
    image: object
    names: tuple[str, ...]
    digest: str  # identity: two candidates with one digest are the same image
    key: object
    platform: Platform | None
    present: bool = True  # False: listed, but its manifest is not in the archive


PlatformOf = Callable[[Candidate], Platform | None]


def _describe(c: Candidate, platform_of: PlatformOf, mark_absent: bool = True) -> str:
    name = c.names[0] if c.names else f"@{c.position}"
    plat = platform_of(c) if c.present else c.platform
    text = f"{name} ({plat})" if plat else name
    return text if c.present or not mark_absent else f"{text} [not in this archive]"


def listing(candidates: Sequence[Candidate], platform_of: PlatformOf) -> str:
    """What an archive offers, in one line, for error messages."""
    seen: list[str] = []
    for c in candidates:
        text = _describe(c, platform_of)
        if text not in seen:
            seen.append(text)
    return ", ".join(seen) if seen else "nothing"


def _by_ref(candidates: list[Candidate], ref: str, platform_of: PlatformOf) -> list[Candidate]:
    if ref.startswith("@") and ref[1:].isdigit():
        found = [c for c in candidates if c.position == int(ref[1:])]
    else:
        found = [c for c in candidates if ref_matches(ref, c.names)]
    if not found:
        available = listing(candidates, platform_of)
        raise NotFoundError(f"no image named {ref!r} in this archive; available: {available}")
    return found


def _pick(
    group: list[Candidate], want: Platform | None, platform_of: PlatformOf
) -> Candidate | None:
    present = [c for c in group if c.present]
    if want is None and len(present) == 1:
        return present[0]
    if want is None and len(group) == 1:
        return group[0]  # absent: choose() says so rather than "no such platform"
    target = want or host_platform()
    for c in group:
        plat = platform_of(c) if c.present else c.platform
        if plat is not None and platform_matches(target, plat):
            return c
    return None


def choose(
    candidates: Sequence[Candidate],
    ref: str | None,
    want: Platform | None,
    platform_of: PlatformOf,
) -> Candidate:
    """The one candidate ``ref`` and ``want`` designate, or a ``NotFoundError`` listing all."""
    pool = list(candidates)
    if not pool:
        raise NotFoundError("no image manifest in this archive")
    if ref is not None:
        pool = _by_ref(pool, ref, platform_of)
    groups: dict[object, list[Candidate]] = {}
    for c in pool:
        groups.setdefault(c.image, []).append(c)
    picks = [p for g in groups.values() if (p := _pick(g, want, platform_of)) is not None]
    if not picks:
        target = f"{want}" if want else f"{host_platform()} (this host; use --platform)"
        raise NotFoundError(
            f"no image for platform {target}; available: {listing(pool, platform_of)}"
        )
    if len({p.digest for p in picks}) > 1:
        what = f"{len(picks)} images match {ref!r}" if ref else f"{len(picks)} images"
        raise NotFoundError(
            f"{what} in this archive; choose one with --ref (a name or @N): "
            + listing(picks, platform_of)
        )
    chosen = picks[0]
    if not chosen.present:
        raise NotFoundError(
            f"{_describe(chosen, platform_of, False)} is listed, but {chosen.digest} "
            f"is not in this archive; available: {listing(pool, platform_of)}"
        )
    return chosen
