"""The one OCI image layout writer (``oci_layout_files``) and the layouts its callers make.

The documents are pinned byte for byte for fixed descriptors, because the
committed testdata and the cached benchmark inputs depend on those bytes; the
written layouts must open with ``open_image`` and give back their layers; the
benchmark layout must hardlink its layer files, never copy them.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from builders import Layer

from extractor.decode import LayerStream
from extractor.images import open_image
from extractor.imagewrite import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    REF_NAME,
    blob_files,
    blob_path,
    canonical_json,
    descriptor,
    digest_of,
    oci_layout_files,
    write_files,
    write_oci_layout,
)

TOP = Path(__file__).resolve().parent.parent
LAYERS = [
    {"mediaType": OCI_LAYER_GZIP, "digest": "sha256:" + "a" * 64, "size": 10},
    {"mediaType": OCI_LAYER, "digest": "sha256:" + "b" * 64, "size": 2048},
]
CONFIG = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
# index.json of oci_layout_files(LAYERS, CONFIG, "v1"): a change here changes every caller's bytes
INDEX = (
    b'{"manifests":[{"annotations":{"org.opencontainers.image.ref.name":"v1"},'
    b'"digest":"sha256:'
    b'MANIFEST","mediaType":"application/vnd.oci.image.manifest.v1+json","size":SIZE}],'
    b'"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}'
)


def _entry(files: dict[str, bytes]) -> dict[str, Any]:
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert isinstance(entry, dict)
    return entry


def test_layout_files_are_the_small_documents_named_by_digest() -> None:
    """oci-layout, index.json, then the config and manifest blobs, each under its sha256."""
    files = oci_layout_files(LAYERS, CONFIG, "v1")
    config = canonical_json(CONFIG)
    manifest = files[blob_path(_entry(files)["digest"])]
    assert set(files) == {
        "oci-layout",
        "index.json",
        blob_path(digest_of(config)),
        blob_path(digest_of(manifest)),
    }
    assert files["oci-layout"] == b'{"imageLayoutVersion":"1.0.0"}'
    assert files[blob_path(digest_of(config))] == config
    assert json.loads(manifest) == {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": LAYERS,
    }
    assert manifest == canonical_json(json.loads(manifest))
    expected = INDEX.replace(b"MANIFEST", hashlib.sha256(manifest).hexdigest().encode())
    assert files["index.json"] == expected.replace(b"SIZE", str(len(manifest)).encode())


def test_dump_serialises_every_document_and_platform_goes_in_the_entry() -> None:
    """A caller's serialiser makes every file; ``platform`` lands beside the ref annotation."""
    plain = oci_layout_files(LAYERS, CONFIG, "v1")
    assert "platform" not in _entry(plain)
    files = oci_layout_files(
        LAYERS,
        CONFIG,
        "v1",
        dump=lambda doc: canonical_json(doc) + b"\n",
        platform={"architecture": "arm64", "os": "linux"},
    )
    assert all(data.endswith(b"}\n") for data in files.values())
    for name, data in files.items():
        if name.startswith("blobs/"):
            assert name == blob_path(digest_of(data))
    entry = _entry(files)
    assert entry["platform"] == {"architecture": "arm64", "os": "linux"}
    assert entry["annotations"] == {REF_NAME: "v1"}


def test_blob_files_store_a_repeated_blob_once() -> None:
    """Blobs are keyed by digest, so a layer listed twice is one file."""
    files = blob_files([b"x", b"y", b"x"])
    assert files == {blob_path(digest_of(b"x")): b"x", blob_path(digest_of(b"y")): b"y"}
    assert blob_path("sha512:abc") == "blobs/sha512/abc"


def _layers_of(path: Path, ref: str) -> list[tuple[str, str, str | None, str]]:
    """(diff_id, digest as read, digest as listed, media type) of each layer of ``ref``."""
    out = []
    with open_image(str(path), ref) as image:
        for layer in image.layers:
            with layer.open() as f:
                digest, diff_id = LayerStream(f).finish()
            assert diff_id == layer.diff_id
            out.append((diff_id, digest, layer.digest, layer.media_type))
    return out


def test_write_oci_layout_opens_with_its_layers(tmp_path: Path) -> None:
    """The corpus writer's layout opens by tag and gives back each tar, gzip compressed."""
    tars = [Layer().file(f"f{i}", b"data\n" * (i + 1)).tar() for i in range(3)]
    layout = Path(write_oci_layout(str(tmp_path / "oci"), tars, "t"))
    got = _layers_of(layout, "t")
    assert [diff_id for diff_id, *_ in got] == [digest_of(tar) for tar in tars]
    assert all(read == carried and media == OCI_LAYER_GZIP for _, read, carried, media in got)
    for name in ("oci-layout", "index.json"):
        assert (layout / name).read_bytes() == canonical_json(
            json.loads((layout / name).read_bytes())
        )


def test_write_files_makes_directories(tmp_path: Path) -> None:
    """Paths are relative to the root, with their directories made on the way."""
    write_files(tmp_path / "root", {"a": b"1", "blobs/sha256/b": b"2"})
    assert (tmp_path / "root" / "a").read_bytes() == b"1"
    assert (tmp_path / "root" / "blobs" / "sha256" / "b").read_bytes() == b"2"


def test_benchmark_layout_hardlinks_its_layer_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/stacks.py links layer files into blobs/ (one link for a repeated layer)."""
    monkeypatch.syspath_prepend(str(TOP / "benchmarks"))
    stacks = importlib.import_module("stacks")
    tars = [Layer().file("a", b"a\n").tar(), Layer().file("b", b"b\n").tar()]
    layers = []
    for i, tar in enumerate(tars):
        blob = gzip.compress(tar, mtime=0)
        path = tmp_path / f"layer{i}.tar.gz"
        path.write_bytes(blob)
        layers.append(
            stacks.LayerFile(
                str(path), "gzip", digest_of(blob), len(blob), digest_of(tar), len(tar), 1
            )
        )
    stack = stacks.Stack("s", 1.0, [*layers, layers[0]], str(tmp_path / "oci"))
    stacks.write_layout(stack, Path(stack.layout))
    for layer in layers:
        assert os.path.samefile(layer.path, Path(stack.layout) / blob_path(layer.digest))
    got = _layers_of(Path(stack.layout), stacks.TAG)
    assert [diff_id for diff_id, *_ in got] == [digest_of(t) for t in [*tars, tars[0]]]
