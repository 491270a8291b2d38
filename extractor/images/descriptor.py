"""Descriptors, digests and media types: the vocabulary of OCI and docker images.

A digest from a manifest becomes a path (``blobs/sha256/<hex>``), so it is
validated before anything is joined or opened: a ``sha256:../../etc/passwd``
must fail as a bad digest, never as a missing file (CVE-2024-3727).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInputError
from .jsondoc import expect_object, expect_str, optional_str, show, string_map
from .model import Platform

# descriptor.md: the grammar, and the two registered algorithms with their
# exact encodings (lowercase hex: "A-F MUST NOT be used").
_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_ENCODINGS = {
    "sha256": re.compile(r"[a-f0-9]{64}"),
    "sha512": re.compile(r"[a-f0-9]{128}"),
}

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)

LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
    }
)
# Layers whose content is fetched from elsewhere (Windows base layers, the
# deprecated OCI non-distributable types): an archive does not carry them.
FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)

ATTESTATION = "attestation-manifest"


def check_digest(value: object, what: str) -> str:
    """``value`` if it is a valid ``sha256:``/``sha512:`` digest, else ``BadInputError``."""
    if not isinstance(value, str) or not _GRAMMAR.fullmatch(value):
        raise BadInputError(f"{what}: {show(value)} is not a digest (algorithm:hex)")
    algorithm, _, encoded = value.partition(":")
    pattern = _ENCODINGS.get(algorithm)
    if pattern is None:
        raise BadInputError(f"{what}: unsupported digest algorithm {algorithm!r}")
    if not pattern.fullmatch(encoded):
        raise BadInputError(f"{what}: {show(value)} is not a valid {algorithm} digest")
    return value


def blob_path(digest: str) -> str:
    """Where an OCI layout keeps a blob: ``blobs/<alg>/<hex>`` (digest already checked)."""
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


def check_size(value: object, what: str) -> int:
    """A descriptor ``size``: an integer, never negative (descriptor.md)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInputError(f"{what}: size {show(value)} is not an integer")
    if value < 0:
        raise BadInputError(f"{what}: negative size {value}")
    return value


def parse_platform_object(value: object, what: str) -> Platform | None:
    """A descriptor's ``platform`` object (``None`` when absent)."""
    if value is None:
        return None
    obj = expect_object(value, what)
    return Platform(
        os=optional_str(obj.get("os"), f"{what}.os"),
        architecture=optional_str(obj.get("architecture"), f"{what}.architecture"),
        variant=optional_str(obj.get("variant"), f"{what}.variant"),
    )


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A content descriptor: what a blob is, its digest and size, and where it applies."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str = ""


def parse_descriptor(value: object, what: str) -> Descriptor:
    """Validate one descriptor object; ``what`` names it in errors."""
    obj: dict[str, Any] = expect_object(value, what)
    digest = check_digest(obj.get("digest"), what)
    urls = obj.get("urls") or []
    return Descriptor(
        media_type=optional_str(obj.get("mediaType"), f"{what}.mediaType"),
        digest=digest,
        size=check_size(obj.get("size"), what),
        annotations=string_map(obj.get("annotations"), f"{what}.annotations"),
        platform=parse_platform_object(obj.get("platform"), f"{what}.platform"),
        urls=tuple(expect_str(u, f"{what}.urls[]") for u in urls if isinstance(urls, list)),
        artifact_type=optional_str(obj.get("artifactType"), f"{what}.artifactType"),
    )


def check_blob(data: bytes, desc: Descriptor, what: str) -> None:
    """``BadInputError`` unless ``data`` has the descriptor's size and digest."""
    if len(data) != desc.size:
        raise BadInputError(f"{what}: size is {len(data)}, the descriptor says {desc.size}")
    algorithm, _, expected = desc.digest.partition(":")
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != expected:
        raise BadInputError(
            f"{what}: digest mismatch: expected {desc.digest}, got {algorithm}:{actual}"
        )
