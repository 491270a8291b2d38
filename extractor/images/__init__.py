"""Images as users have them: ``docker save`` tarballs, OCI layouts and archives.

    from extractor.images import open_image
    with open_image("busybox.tar.gz", ref="busybox:latest", platform="linux/arm64") as image:
        for layer in image.layers:          # manifest order, oldest first
            with layer.open() as blob:      # the stored bytes, still compressed
                ...                         # check layer.digest / layer.diff_id while reading

What is recognised, by content, never by file name:

* a directory with ``oci-layout`` + ``index.json``: an OCI layout (``oci-layout``);
* a tar with ``manifest.json``: a ``docker save`` (``docker-save``), or, with an
  ``index.json`` beside it (docker 25+), ``docker-save-oci``: the index is
  used and cross-checked against ``manifest.json``, which wins when the two
  disagree (docker 25.0 wrote manifests with no layers, moby#47065);
* a tar with ``index.json`` only: an OCI archive (``oci-archive``);
* any of these tarballs compressed whole with gzip or zstd (sniffed by magic).

Layers are read in place, never extracted to disk first. Nothing is verified
here beyond the structure: the digests, sizes and DiffIDs are carried on each
``LayerRef`` for the consumer to check while streaming.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import BadInputError, ExtractorError, NotFoundError
from .archive import TarStore
from .descriptor import blob_path
from .dockersave import DockerSaveReader
from .jsondoc import expect_object, parse_json, show
from .layers import Resolved, build_layers
from .model import Image, LayerRef, Platform
from .oci import OciReader, config_platform
from .select import Candidate, choose, host_platform, parse_platform
from .store import DirStore, Store

__all__ = [
    "Image",
    "LayerRef",
    "Platform",
    "available",
    "describe",
    "host_platform",
    "open_image",
    "parse_platform",
]

Reader = OciReader | DockerSaveReader


def _open_store(path: str) -> Store:
    if os.path.isdir(path):
        return DirStore(path)
    if not os.path.lexists(path):
        raise NotFoundError(f"no such file or directory: {path}")
    if not os.path.isfile(path):
        raise BadInputError(f"{path} is not a regular file or a directory (spool a pipe to a file)")
    return TarStore(path)


def _layout_warnings(store: Store) -> list[str]:
    if not store.exists("oci-layout"):
        return ["no oci-layout file beside index.json"]
    layout = expect_object(parse_json(store.read("oci-layout"), "oci-layout"), "oci-layout")
    version = layout.get("imageLayoutVersion")
    if version != "1.0.0":
        return [f"oci-layout: imageLayoutVersion is {show(version)}, not '1.0.0'; reading anyway"]
    return []


def _format(store: Store) -> str:
    has_manifest = store.exists("manifest.json")
    has_index = store.exists("index.json")
    if has_manifest:
        return "docker-save-oci" if has_index else "docker-save"
    if has_index:
        return "oci-layout" if isinstance(store, DirStore) else "oci-archive"
    raise BadInputError(
        f"{store.label}: not an image: no manifest.json or index.json "
        "(for a single layer tarball use `extractor apply`)"
    )


def _readers(store: Store, fmt: str, verify: bool) -> tuple[Reader, DockerSaveReader | None]:
    if fmt == "docker-save":
        return DockerSaveReader(store, verify), None
    if fmt == "docker-save-oci":
        docker = DockerSaveReader(store, verify)
        return OciReader(store, docker.repo_tags, verify), docker
    return OciReader(store, verify=verify), None


def _cross_check(resolved: Resolved, docker: DockerSaveReader, warnings: list[str]) -> Resolved:
    """Prefer ``manifest.json``'s layers when the OCI manifest disagrees (moby#47065)."""
    if resolved.config_digest is None:
        return resolved
    entry = docker.entry_for(blob_path(resolved.config_digest))
    if entry is None:  # manifest.json covers another platform: nothing to compare
        return resolved
    oci_layers = tuple(spec.name for spec in resolved.specs)
    if oci_layers == entry.layers:
        return resolved
    warnings.append(
        f"index.json lists {len(oci_layers)} layers for {resolved.manifest_digest} but "
        f"manifest.json lists {len(entry.layers)}; using manifest.json"
    )
    types = {spec.name: spec.media_type for spec in resolved.specs}
    fixed = docker.resolve_entry(entry, types)
    return Resolved(resolved.manifest_digest, fixed.config_digest, fixed.config, fixed.specs)


def _select(reader: Reader, ref: str | None, want: Platform | None) -> tuple[Candidate, Resolved]:
    chosen = choose(reader.candidates(), ref, want, reader.platform_of)
    return chosen, reader.resolve(chosen)


def _read(store: Store, ref: str | None, want: Platform | None, verify: bool) -> Image:
    fmt = _format(store)
    warnings = _layout_warnings(store) if fmt in ("oci-layout", "oci-archive") else []
    reader, docker = _readers(store, fmt, verify)
    try:
        chosen, resolved = _select(reader, ref, want)
    except (BadInputError, NotFoundError) as e:
        if docker is None:
            raise
        # Docker's own save bugs leave index.json empty or short (moby#47210,
        # #51389) while manifest.json is right: fall back to it.
        try:
            chosen, resolved = _select(docker, ref, want)
        except ExtractorError:
            raise e from None
        warnings.append(f"index.json: {e}; used manifest.json instead")
    else:
        if docker is not None:
            resolved = _cross_check(resolved, docker, warnings)
    layers = build_layers(store, resolved.config, resolved.specs)
    plat = config_platform(resolved.config) or chosen.platform
    return Image(
        source=store.label,
        format=fmt,
        # "@N" says nothing to a reader of the result: name the image instead.
        ref=ref if ref is not None and not ref.startswith("@") else next(iter(chosen.names), ref),
        platform=str(plat) if plat is not None else None,
        manifest_digest=resolved.manifest_digest,
        config_digest=resolved.config_digest,
        config=resolved.config,
        layers=layers,
        warnings=tuple(warnings),
        concurrent_layers=store.concurrent,
        _closer=store.close,
    )


def open_image(
    path: str, ref: str | None = None, platform: str | None = None, *, verify: bool = True
) -> Image:
    """Open the image at ``path`` (file or directory) and pick one by ``ref`` and ``platform``.

    ``ref`` is a name (``busybox:latest``, ``docker.io/library/busybox``, a
    bare tag like ``latest`` for OCI layouts) or ``@N`` for the N-th entry.
    ``platform`` is ``os/arch[/variant]`` (a malformed one is a
    ``ValueError``); by default the only image, else the host's platform.
    Raises ``NotFoundError`` (exit 4) for a missing path, blob, ref or
    platform, with what is available in the message; ``BadInputError``
    (exit 3) for an archive that is not a valid image. The returned ``Image``
    keeps the archive open until closed (use ``with``).

    With ``verify`` (the default) the index, manifest and config blobs read
    must match their descriptors' digest and size; layers are never
    verified here: their expected digest, size and DiffID ride on each
    ``LayerRef`` for the consumer to check while streaming.
    """
    want = parse_platform(platform) if platform is not None else None
    store = _open_store(path)
    try:
        return _read(store, ref, want, verify)
    except BaseException:
        store.close()
        raise


def available(path: str) -> list[dict[str, Any]]:
    """What the image file or directory offers: one dict per image manifest listed.

    Each has ``index`` (for ``@N``), ``names``, ``platform``, ``digest`` (the
    manifest digest; for a legacy docker save, its config path) and ``present``
    (false when the index lists it but the archive lacks its blobs).
    """
    store = _open_store(path)
    try:
        reader, _docker = _readers(store, _format(store), verify=False)
        out = []
        for c in reader.candidates():
            plat = reader.platform_of(c)
            out.append(
                {
                    "index": c.position,
                    "names": list(c.names),
                    "platform": str(plat) if plat is not None else None,
                    "digest": c.digest,
                    "present": c.present,
                }
            )
        return out
    finally:
        store.close()


def _layer_summary(layer: LayerRef) -> dict[str, Any]:
    return {
        "index": layer.index,
        "media_type": layer.media_type,
        "size": layer.size,
        "digest": layer.digest,
        "diff_id": layer.diff_id,
        "created_by": layer.created_by,
        "name": layer.name,
    }


def describe(image: Image) -> dict[str, Any]:
    """A JSON-ready summary for ``extractor inspect --json``: layers and config."""
    config = image.config
    run = config.get("config")
    run = run if isinstance(run, dict) else {}
    summary = {
        "os": config.get("os"),
        "architecture": config.get("architecture"),
        "variant": config.get("variant"),
        "created": config.get("created"),
        "entrypoint": run.get("Entrypoint"),
        "cmd": run.get("Cmd"),
        "env": run.get("Env"),
        "working_dir": run.get("WorkingDir"),
        "user": run.get("User"),
        "labels": run.get("Labels"),
    }
    result = {
        "source": image.source,
        "format": image.format,
        "ref": image.ref,
        "platform": image.platform,
        "manifest_digest": image.manifest_digest,
        "config_digest": image.config_digest,
        "layers": [_layer_summary(layer) for layer in image.layers],
        "config": summary,
        "warnings": list(image.warnings),
    }
    # Round-trip so that whatever odd values a config holds are plain JSON.
    out: dict[str, Any] = json.loads(json.dumps(result))
    return out
