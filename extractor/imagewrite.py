"""Write layer tars as whole images: an OCI image layout and a ``docker save`` archive.

Small and deterministic: the same layers always give the same bytes (gzip
with mtime 0, JSON with sorted keys, fixed member times and order), so a
conformance corpus written twice is identical. The OCI layout has one image
tagged ``TAG`` (``org.opencontainers.image.ref.name``), layers gzip
compressed; the docker save is the legacy form (``<id>/layer.tar``, plain
tar, ``manifest.json`` and ``repositories``), which every reader accepts.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from .paxwriter import TarWriter

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
MTIME = 1_600_000_000  # of every member of the docker save archive


def digest_of(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def image_config(layers: Sequence[bytes]) -> dict[str, Any]:
    """A minimal linux/amd64 image config whose ``rootfs.diff_ids`` are the layers' sha256."""
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": "2020-09-13T12:26:40Z",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(tar) for tar in layers]},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }


def _write_blob(layout: str, data: bytes, media_type: str) -> dict[str, Any]:
    digest = digest_of(data)
    path = os.path.join(layout, "blobs", "sha256", digest.split(":")[1])
    with open(path, "wb") as f:
        f.write(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def write_oci_layout(path: str, layers: Sequence[bytes], tag: str = "latest") -> str:
    """Write the uncompressed layer tars as an OCI image layout directory at ``path``."""
    os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
    descs = [
        _write_blob(path, gzip.compress(tar, compresslevel=6, mtime=0), OCI_LAYER_GZIP)
        for tar in layers
    ]
    config = _write_blob(path, _json(image_config(layers)), OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": descs}
    desc = _write_blob(path, _json(manifest), OCI_MANIFEST)
    desc["annotations"] = {REF_NAME: tag}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]}
    with open(os.path.join(path, "index.json"), "wb") as f:
        f.write(_json(index))
    with open(os.path.join(path, "oci-layout"), "wb") as f:
        f.write(_json({"imageLayoutVersion": "1.0.0"}))
    return path


def write_docker_save(path: str, layers: Sequence[bytes], repo_tag: str) -> str:
    """Write the layer tars as a legacy ``docker save`` archive tagged ``repo_tag``."""
    config = _json(image_config(layers))
    config_name = digest_of(config).split(":")[1] + ".json"
    files: list[tuple[str, bytes]] = [(config_name, config)]
    paths: list[str] = []
    parent = ""
    for i, tar in enumerate(layers):
        layer_id = hashlib.sha256(f"{parent}/{i}/{digest_of(tar)}".encode()).hexdigest()
        files.append((f"{layer_id}/VERSION", b"1.0"))
        files.append((f"{layer_id}/json", _json({"id": layer_id, "parent": parent})))
        files.append((f"{layer_id}/layer.tar", tar))
        paths.append(f"{layer_id}/layer.tar")
        parent = layer_id
    repo, _, version = repo_tag.rpartition(":")
    manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": paths}]
    files.append(("manifest.json", _json(manifest)))
    files.append(("repositories", _json({repo: {version: parent}})))
    with open(path, "wb") as f:
        writer = TarWriter(f)
        made: set[str] = set()
        for name, data in files:
            head = name.rpartition("/")[0]
            if head and head not in made:
                made.add(head)
                writer.member(f"{head}/".encode(), b"5", mode=0o755, uid=0, gid=0, mtime=MTIME)
            writer.member(
                name.encode(), b"0", mode=0o644, uid=0, gid=0, mtime=MTIME, size=len(data)
            )
            writer.write(data)
            writer.pad(len(data))
        writer.finish()
    return path


def tar_bytes(build: Callable[[TarWriter], None]) -> bytes:
    """The bytes a ``TarWriter`` callback ``build(writer)`` writes, then the end marker."""
    buf = io.BytesIO()
    writer = TarWriter(buf)
    build(writer)
    writer.finish()
    return buf.getvalue()
