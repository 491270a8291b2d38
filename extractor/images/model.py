"""What every image reader yields: an ``Image`` and its ``LayerRef`` list.

The records are frozen: a reader builds them once, after validating the
manifest and config, and nothing downstream can change what was checked.
Opening a layer is deferred to ``LayerRef.open`` so that an image with a
hundred layers costs a hundred small records until someone reads one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO


@dataclass(frozen=True, slots=True)
class Platform:
    """An ``os/architecture[/variant]`` triple, as written in indexes and configs."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


def _no_opener() -> BinaryIO:
    raise RuntimeError("this LayerRef was built without an opener")


@dataclass(frozen=True, slots=True)
class LayerRef:
    """One layer of an image, in manifest order, with what it must hash to.

    ``digest`` and ``size`` describe the blob as stored (possibly compressed)
    and are ``None`` when the format has no descriptor (legacy docker save).
    ``diff_id`` is the digest of the uncompressed tar, from the config. The
    reader carries these values; checking them is the consumer's job, done
    while streaming the bytes that ``open`` returns.
    """

    index: int
    media_type: str
    digest: str | None
    size: int | None
    diff_id: str
    created_by: str | None
    name: str
    # Opens the stored bytes; kept out of repr/eq because it is a closure
    # over the archive, not part of the layer's identity.
    _opener: Callable[[], BinaryIO] = field(default=_no_opener, repr=False, compare=False)

    def open(self) -> BinaryIO:
        """The blob's raw bytes as stored (still compressed), limited to this layer.

        Valid while the ``Image`` is open. Close the returned object when done.
        """
        return self._opener()


def _no_close() -> None:
    return None


@dataclass(frozen=True)
class Image:
    """An image picked from a file or directory, ready to be unpacked.

    ``format`` is ``oci-layout``, ``oci-archive``, ``docker-save`` (legacy
    ``<id>/layer.tar``) or ``docker-save-oci`` (docker 25+, an OCI layout with
    ``manifest.json`` beside it). ``platform`` is ``os/arch[/variant]`` from the
    config. ``warnings`` are one-line notes about tolerated oddities (an
    unexpected ``oci-layout`` version, an index that disagrees with
    ``manifest.json``); the reader does not log them itself.

    Use as a context manager: leaving it closes the archive, after which
    ``LayerRef.open`` fails.
    """

    source: str
    format: str
    ref: str | None
    platform: str | None
    manifest_digest: str | None
    config_digest: str | None
    config: dict[str, Any]
    layers: tuple[LayerRef, ...]
    warnings: tuple[str, ...] = ()
    # Whether layers may be opened and read at once (a layout's blobs are
    # files of their own; an archive's members share its file).
    concurrent_layers: bool = False
    _closer: Callable[[], None] = field(default=_no_close, repr=False, compare=False)

    def close(self) -> None:
        """Close the files the reader keeps open; safe to call twice."""
        self._closer()

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
