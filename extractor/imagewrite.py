"""Write layer tars as whole images: an OCI image layout and a ``docker save`` archive.

Small and deterministic: the same layers always give the same bytes (gzip
with mtime 0, JSON with sorted keys, fixed member times and order), so a
conformance corpus written twice is identical. The OCI layout has one image
tagged ``TAG`` (``org.opencontainers.image.ref.name``), layers gzip
compressed; the docker save is the legacy form (``<id>/layer.tar``, plain
tar, ``manifest.json`` and ``repositories``), which every reader accepts.

``oci_layout_files`` is the one OCI layout writer: ``write_oci_layout`` here,
the testdata generators and the benchmark inputs all build their layouts with
it, each storing its own layer blobs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .paxwriter import TarWriter

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
REF_NAME = "org.opencontainers.image.ref.name"
MTIME = 1_600_000_000  # of every member of the docker save archive


def digest_of(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(doc: object) -> bytes:
    """``doc`` as compact JSON with sorted keys, so equal documents give equal bytes."""
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


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    """The OCI descriptor (``mediaType``, ``digest``, ``size``) of the blob ``data``."""
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}


def blob_path(digest: str) -> str:
    """Where the blob ``digest`` (``algorithm:hex``) lives in an OCI image layout."""
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


def blob_files(blobs: Iterable[bytes]) -> dict[str, bytes]:
    """``blobs`` by their path in an OCI image layout (a blob listed twice is stored once)."""
    return {blob_path(digest_of(data)): data for data in blobs}


def oci_layout_files(
    layers: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any],
    tag: str,
    *,
    dump: Callable[[Any], bytes] = canonical_json,
    platform: Mapping[str, str] | None = None,
) -> dict[str, bytes]:
    """The small files of an OCI image layout holding one image tagged ``tag``, by path.

    ``layers`` are the layer descriptors (``mediaType``, ``digest``, ``size``),
    oldest first, and ``config`` the image config document. The layer blobs
    themselves are the caller's to store at ``blob_path(digest)``, as bytes
    (``blob_files``) or as a hardlink to a file already on disk, so no layer is
    read here. Returns ``oci-layout``, ``index.json`` and the config and
    manifest blobs, every document serialised by ``dump``: the bytes depend on
    it, so a caller whose output is committed passes its own. ``platform``,
    when given, is added to the manifest's entry in ``index.json``.
    """
    config_blob = dump(dict(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config_blob),
        "layers": [dict(layer) for layer in layers],
    }
    manifest_blob = dump(manifest)
    entry = descriptor(OCI_MANIFEST, manifest_blob)
    entry["annotations"] = {REF_NAME: tag}
    if platform is not None:
        entry["platform"] = dict(platform)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    return {
        "oci-layout": dump({"imageLayoutVersion": "1.0.0"}),
        "index.json": dump(index),
        **blob_files([config_blob, manifest_blob]),
    }


def write_files(root: str | os.PathLike[str], files: Mapping[str, bytes]) -> None:
    """Write ``files`` (by ``/``-separated path below ``root``), making directories as needed."""
    for name, data in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def write_oci_layout(path: str, layers: Sequence[bytes], tag: str = "latest") -> str:
    """Write the uncompressed layer tars as an OCI image layout directory at ``path``."""
    blobs = [gzip.compress(tar, compresslevel=6, mtime=0) for tar in layers]
    descs = [descriptor(OCI_LAYER_GZIP, blob) for blob in blobs]
    write_files(path, {**blob_files(blobs), **oci_layout_files(descs, image_config(layers), tag)})
    return path


def write_docker_save(path: str, layers: Sequence[bytes], repo_tag: str) -> str:
    """Write the layer tars as a legacy ``docker save`` archive tagged ``repo_tag``."""
    config = canonical_json(image_config(layers))
    config_name = digest_of(config).split(":")[1] + ".json"
    files: list[tuple[str, bytes]] = [(config_name, config)]
    paths: list[str] = []
    parent = ""
    for i, tar in enumerate(layers):
        layer_id = hashlib.sha256(f"{parent}/{i}/{digest_of(tar)}".encode()).hexdigest()
        files.append((f"{layer_id}/VERSION", b"1.0"))
        files.append((f"{layer_id}/json", canonical_json({"id": layer_id, "parent": parent})))
        files.append((f"{layer_id}/layer.tar", tar))
        paths.append(f"{layer_id}/layer.tar")
        parent = layer_id
    repo, _, version = repo_tag.rpartition(":")
    manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": paths}]
    files.append(("manifest.json", canonical_json(manifest)))
    files.append(("repositories", canonical_json({repo: {version: parent}})))
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
