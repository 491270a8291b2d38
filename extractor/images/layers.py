"""From a config and a list of layer blobs to validated ``LayerRef`` records.

Every reader ends here, so the rules are checked in one place:
``rootfs.type`` must be ``layers`` (config.md: anything else "MUST generate
an error"), there must be exactly one DiffID per layer (ggcr: otherwise "the
config may not describe a runnable image"), each layer must have a media
type we can apply, and its blob must be in the archive. A repeated layer is
kept at each of its positions: it is applied twice, never deduplicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import BadInputError, ExtractorError, NotFoundError
from .descriptor import FOREIGN_LAYER_TYPES, LAYER_TYPES, check_digest
from .jsondoc import expect_list, expect_object, show
from .model import LayerRef
from .store import Store


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """A layer as the manifest lists it, before its config entry is joined to it.

    ``name`` is the file in the store (``blobs/sha256/<hex>``, ``<id>/layer.tar``).
    ``media_type`` is ``""`` where the format has none (docker save).
    ``foreign`` carries a reason when the format marks the layer as not
    shipped (docker's ``LayerSources``).
    """

    name: str
    media_type: str
    digest: str | None
    size: int | None
    urls: tuple[str, ...] = ()
    foreign: str = ""


def diff_ids(config: dict[str, Any]) -> list[str]:
    """The config's ``rootfs.diff_ids``, checked."""
    rootfs = expect_object(config.get("rootfs"), "config: rootfs")
    kind = rootfs.get("type")
    if kind != "layers":
        raise BadInputError(f"config: rootfs.type is {show(kind)}, not 'layers'")
    ids = expect_list(rootfs.get("diff_ids", []), "config: rootfs.diff_ids")
    return [check_digest(d, f"config: rootfs.diff_ids[{i}]") for i, d in enumerate(ids)]


def created_by(config: dict[str, Any]) -> list[str | None]:
    """``history[].created_by`` of the entries that made a layer, in order.

    Entries marked ``empty_layer`` (ENV, CMD, ...) made no layer and are
    skipped, never zipped against the layers.
    """
    history = config.get("history")
    if not isinstance(history, list):
        return []
    out: list[str | None] = []
    for item in history:
        if not isinstance(item, dict) or item.get("empty_layer") is True:
            continue
        value = item.get("created_by")
        out.append(value if isinstance(value, str) else None)
    return out


def _check_type(spec: LayerSpec) -> None:
    if spec.foreign:
        raise BadInputError(f"foreign layer, not in the archive: {spec.foreign}")
    if spec.media_type in FOREIGN_LAYER_TYPES:
        where = f" (fetched from {spec.urls[0]})" if spec.urls else ""
        raise BadInputError(
            f"non-distributable layer ({spec.media_type}): its content is not shipped "
            f"with the image{where}"
        )
    if spec.media_type and spec.media_type not in LAYER_TYPES:
        raise BadInputError(f"unknown layer media type {show(spec.media_type)}")


def build_layers(
    store: Store, config: dict[str, Any], specs: list[LayerSpec]
) -> tuple[LayerRef, ...]:
    """Join ``specs`` with the config's DiffIDs and history; check each layer is usable."""
    ids = diff_ids(config)
    if len(ids) != len(specs):
        raise BadInputError(
            f"the manifest has {len(specs)} layers but the config lists {len(ids)} diff_ids"
        )
    history = created_by(config)
    refs: list[LayerRef] = []
    for i, spec in enumerate(specs):
        label = f"{i + 1}/{len(specs)} ({spec.name})"
        try:
            _check_type(spec)
            opener = store.opener(spec.name)
            # Without a descriptor the stored size is the only size there is.
            size = spec.size if spec.size is not None else store.size(spec.name)
        except NotFoundError:
            raise NotFoundError("not in this archive", layer=label) from None
        except ExtractorError as e:
            raise e.with_context(layer=label) from None
        refs.append(
            LayerRef(
                index=i,
                media_type=spec.media_type,
                digest=spec.digest,
                size=size,
                diff_id=ids[i],
                created_by=history[i] if i < len(history) else None,
                name=spec.name,
                _opener=opener,
            )
        )
    return tuple(refs)


@dataclass(frozen=True)
class Resolved:
    """A chosen image, read but not yet checked layer by layer."""

    manifest_digest: str | None
    config_digest: str | None
    config: dict[str, Any]
    specs: list[LayerSpec]
