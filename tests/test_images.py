"""Image readers: OCI layouts and archives, docker saves old and new, compressed archives.

Each format is built here (``imagebuilders``) or by a real tool (umoci,
skopeo) and opened with ``open_image``; the tests check that the layers come
out in manifest order with bytes that hash to their digest and DiffID, that
selection by ref and platform picks the right image, that bad archives fail
with the right error class and a one-line message, and that a compressed
archive is read in about one pass with little memory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import shutil
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from builders import Layer
from imagebuilders import (
    EMPTY_TAR_DIFF_ID,
    OCI_MANIFEST,
    DockerSave,
    OciLayout,
    compress,
    config_doc,
    docker25,
    proc_io_available,
    rchar,
    read_all,
    sha256,
    tar_bytes,
    to_json,
    write_tar,
)

from extractor.decode import LayerStream
from extractor.errors import BadInputError, ExtractorError, NotFoundError, OperationalError
from extractor.images import Image, available, describe, open_image


def tars(n: int, tag: str = "") -> list[bytes]:
    """``n`` distinct small layer tars."""
    return [
        Layer().file(f"f{i}{tag}", f"layer {i} {tag}\n".encode() * (i + 1)).tar() for i in range(n)
    ]


def hashes(image: Image) -> list[tuple[str, str]]:
    """(digest, diff_id) of each layer's bytes, as ``open()`` gives them."""
    out = []
    for layer in image.layers:
        with layer.open() as f:
            out.append(LayerStream(f).finish())
    return out


def assert_layers_verify(image: Image) -> None:
    """Every layer's bytes hash to the digest (if any) and DiffID it carries."""
    for layer, (digest, diff_id) in zip(image.layers, hashes(image), strict=True):
        assert diff_id == layer.diff_id, layer.name
        if layer.digest is not None:
            assert digest == layer.digest, layer.name
        assert layer.size is not None


def one_line_error(exc: ExtractorError) -> str:
    """The error as the CLI prints it; must be one line."""
    text = str(exc)
    assert "\n" not in text and text.strip(), text
    return text


# -- OCI layouts and archives ----------------------------------------------------------


def mixed_layout(tmp_path: Path) -> tuple[OciLayout, list[bytes], dict[str, Any]]:
    """A layout with one image of gzip, zstd and plain layers."""
    oci = OciLayout()
    layers = tars(3, "mixed")
    desc = oci.image(layers, compression=["gzip", "zstd", "none"])
    oci.tag(desc, "v1")
    return oci, layers, desc


def test_oci_layout_dir_layers_in_order_and_hash_to_their_digests(tmp_path: Path) -> None:
    """An OCI layout directory yields its gzip, zstd and plain layers in order, verifiable."""
    oci, layers, desc = mixed_layout(tmp_path)
    with open_image(str(oci.write_dir(tmp_path / "layout"))) as image:
        assert image.format == "oci-layout"
        assert image.ref == "v1"
        assert image.manifest_digest == desc["digest"]
        assert [layer.diff_id for layer in image.layers] == [sha256(t) for t in layers]
        assert [layer.media_type.rsplit(".", 1)[1] for layer in image.layers] == [
            "tar+gzip",
            "tar+zstd",
            "tar",
        ]
        assert [layer.created_by for layer in image.layers] == ["step 0", "step 1", "step 2"]
        assert [layer.index for layer in image.layers] == [0, 1, 2]
        assert all(
            layer.name == "blobs/sha256/" + layer.digest.split(":")[1]
            for layer in image.layers
            if layer.digest
        )
        assert_layers_verify(image)
        assert image.warnings == ()


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_oci_archive_reads_like_the_layout(tmp_path: Path, compression: str) -> None:
    """An OCI layout tarball, plain or compressed whole, gives the same layers as the directory."""
    oci, layers, desc = mixed_layout(tmp_path)
    path = oci.write_tar(tmp_path / "oci.tar", compression)
    with open_image(str(path)) as image:
        assert image.format == "oci-archive"
        assert image.manifest_digest == desc["digest"]
        assert [layer.diff_id for layer in image.layers] == [sha256(t) for t in layers]
        assert_layers_verify(image)


def test_describe_summarises_layers_and_config(tmp_path: Path) -> None:
    """``describe`` gives the layer table and the config summary, JSON-ready."""
    oci, layers, _ = mixed_layout(tmp_path)
    with open_image(str(oci.write_dir(tmp_path / "layout"))) as image:
        info = describe(image)
    assert json.loads(json.dumps(info)) == info
    assert info["format"] == "oci-layout" and info["platform"] == "linux/amd64"
    assert info["config"] == {
        "os": "linux",
        "architecture": "amd64",
        "variant": None,
        "created": "2024-01-02T03:04:05Z",
        "entrypoint": ["/bin/sh"],
        "cmd": ["-c", "true"],
        "env": ["PATH=/usr/bin:/bin"],
        "working_dir": "/srv",
        "user": "1000:1000",
        "labels": {"org.example": "yes"},
    }
    assert [row["diff_id"] for row in info["layers"]] == [sha256(t) for t in layers]
    assert set(info["layers"][0]) == {
        "index",
        "media_type",
        "size",
        "digest",
        "diff_id",
        "created_by",
        "name",
    }


def test_history_empty_layer_entries_are_not_zipped_with_layers(tmp_path: Path) -> None:
    """``created_by`` skips history entries marked ``empty_layer``."""
    oci = OciLayout()
    layers = tars(2)
    history = [
        {"created_by": "ADD rootfs"},
        {"created_by": "ENV A=1", "empty_layer": True},
        {"created_by": "RUN make"},
        {"created_by": "CMD x", "empty_layer": True},
    ]
    config = config_doc([sha256(t) for t in layers], history=history)
    oci.tag(oci.image(layers, config=config), "v1")
    with open_image(str(oci.write_dir(tmp_path / "l"))) as image:
        assert [layer.created_by for layer in image.layers] == ["ADD rootfs", "RUN make"]


def test_image_with_no_layers_is_an_empty_rootfs(tmp_path: Path) -> None:
    """An image with no layers opens with an empty layer list."""
    oci = OciLayout()
    oci.tag(oci.image([]), "empty")
    with open_image(str(oci.write_dir(tmp_path / "l"))) as image:
        assert image.layers == ()
        assert image.config["rootfs"]["diff_ids"] == []


def test_empty_layer_blob_is_carried(tmp_path: Path) -> None:
    """A 1024-zero-byte layer (the empty tar) is a layer like any other."""
    oci = OciLayout()
    empty = bytes(1024)
    assert sha256(empty) == EMPTY_TAR_DIFF_ID
    oci.tag(oci.image([empty, *tars(1)], compression="none"), "v1")
    path = oci.write_tar(tmp_path / "o.tar.gz", "gzip")
    with open_image(str(path)) as image:
        assert image.layers[0].diff_id == EMPTY_TAR_DIFF_ID
        assert_layers_verify(image)


def test_layout_version_other_than_1_0_0_warns(tmp_path: Path) -> None:
    """An ``oci-layout`` with another version is read, with a warning."""
    oci, _, _ = mixed_layout(tmp_path)
    oci.layout_version = "2.0.0"
    with open_image(str(oci.write_dir(tmp_path / "l"))) as image:
        assert len(image.layers) == 3
        assert len(image.warnings) == 1 and "2.0.0" in image.warnings[0]


def test_index_json_without_descriptor_media_type_is_sniffed(tmp_path: Path) -> None:
    """An index entry with no ``mediaType`` is read by looking at the document."""
    oci = OciLayout()
    desc = oci.image(tars(1))
    del desc["mediaType"]
    oci.tag(desc, "v1")
    with open_image(str(oci.write_dir(tmp_path / "l"))) as image:
        assert len(image.layers) == 1


# -- selection: refs and platforms ----------------------------------------------------------


def multi_platform(tmp_path: Path, compression: str = "gzip") -> tuple[OciLayout, dict[str, str]]:
    """An index → nested index → amd64, arm64, arm/v7 and an attestation; plus odd entries."""
    oci = OciLayout()
    digests: dict[str, str] = {}
    descs = []
    for plat in (
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
        {"os": "linux", "architecture": "arm", "variant": "v7"},
    ):
        key = "/".join(plat.values())
        desc = oci.image(tars(2, key), compression=compression, platform=plat)
        digests[key] = desc["digest"]
        descs.append(desc)
    attestation = oci.image(tars(1, "att"), platform={"os": "unknown", "architecture": "unknown"})
    attestation["annotations"] = {"vnd.docker.reference.type": "attestation-manifest"}
    descs.insert(0, attestation)
    descs.append(
        {
            "mediaType": "application/vnd.example.unknown+json",
            "digest": sha256(b"nothing"),
            "size": 7,
        }
    )
    nested = oci.index(descs)
    oci.tag(nested, "multi", **{"io.containerd.image.name": "docker.io/library/multi:latest"})
    return oci, digests


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/arm64/v8", "linux/arm64/v8"),
        ("linux/aarch64", "linux/arm64/v8"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/v7", "linux/arm/v7"),
    ],
)
def test_platform_selects_through_nested_index(
    tmp_path: Path, platform: str, expected: str
) -> None:
    """``platform`` picks the matching manifest from a nested index, skipping attestations."""
    oci, digests = multi_platform(tmp_path)
    with open_image(str(oci.write_dir(tmp_path / "l")), platform=platform) as image:
        assert image.manifest_digest == digests[expected]
        assert image.ref == "docker.io/library/multi:latest"
        assert_layers_verify(image)


@pytest.mark.parametrize(
    ("machine", "expected"),
    [("x86_64", "linux/amd64"), ("aarch64", "linux/arm64/v8"), ("armv7l", "linux/arm/v7")],
)
def test_default_platform_is_the_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, machine: str, expected: str
) -> None:
    """Without ``platform`` a multi-platform index gives the host's image."""
    oci, digests = multi_platform(tmp_path)
    monkeypatch.setattr("platform.machine", lambda: machine)
    with open_image(str(oci.write_dir(tmp_path / "l"))) as image:
        assert image.manifest_digest == digests[expected]
        assert image.platform == expected


def test_platform_not_available_lists_what_is(tmp_path: Path) -> None:
    """Asking for an absent platform is a NotFoundError listing the platforms there."""
    oci, _ = multi_platform(tmp_path)
    with pytest.raises(NotFoundError) as info:
        open_image(str(oci.write_dir(tmp_path / "l")), platform="linux/s390x")
    text = one_line_error(info.value)
    assert "linux/s390x" in text
    for plat in ("linux/amd64", "linux/arm64/v8", "linux/arm/v7"):
        assert plat in text
    assert "unknown" not in text  # the attestation is not offered


def test_host_platform_missing_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host platform absent from a multi-platform index is a NotFoundError naming the host."""
    oci, _ = multi_platform(tmp_path)
    monkeypatch.setattr("platform.machine", lambda: "riscv64")
    with pytest.raises(NotFoundError, match=r"linux/riscv64 \(this host"):
        open_image(str(oci.write_dir(tmp_path / "l")))


def test_missing_blobs_of_other_platforms_are_fine(tmp_path: Path) -> None:
    """Only the chosen platform's blobs must be present; a listed-but-absent one says so."""
    oci, digests = multi_platform(tmp_path)
    path = oci.write_dir(tmp_path / "l", skip=frozenset({digests["linux/arm/v7"]}))
    with open_image(str(path), platform="linux/amd64") as image:
        assert image.manifest_digest == digests["linux/amd64"]
    with pytest.raises(NotFoundError) as info:
        open_image(str(path), platform="linux/arm/v7")
    assert "not in this archive" in one_line_error(info.value)


def test_single_available_image_is_taken_whatever_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index with one image (and an attestation) gives it even on another host."""
    oci = OciLayout()
    desc = oci.image(tars(1), platform={"os": "linux", "architecture": "s390x"})
    att = oci.image(tars(1, "a"), platform={"os": "unknown", "architecture": "unknown"})
    oci.tag(oci.index([desc, att]), "v1")
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    with open_image(str(oci.write_dir(tmp_path / "l"))) as image:
        assert image.manifest_digest == desc["digest"]
    with pytest.raises(NotFoundError):
        open_image(str(tmp_path / "l"), platform="linux/amd64")


def test_platform_checked_against_config_when_descriptor_has_none(tmp_path: Path) -> None:
    """A descriptor without ``platform`` is matched by its config's os/architecture."""
    oci = OciLayout()
    oci.tag(oci.image(tars(1)), "v1")
    path = str(oci.write_dir(tmp_path / "l"))
    with open_image(path, platform="linux/amd64") as image:
        assert image.platform == "linux/amd64"
    with pytest.raises(NotFoundError, match="linux/amd64"):
        open_image(path, platform="linux/arm64")


def test_unnamed_platform_entries_in_index_json_are_one_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """index.json listing platform manifests directly is a multi-platform index, not N images."""
    oci = OciLayout()
    amd = oci.image(tars(1, "amd"), platform={"os": "linux", "architecture": "amd64"})
    arm = oci.image(tars(1, "arm"), platform={"os": "linux", "architecture": "arm64"})
    oci.tag(amd)
    oci.tag(arm)
    path = str(oci.write_dir(tmp_path / "l"))
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    with open_image(path) as image:
        assert image.manifest_digest == arm["digest"]
    with open_image(path, platform="linux/amd64") as image:
        assert image.manifest_digest == amd["digest"]


def test_unnamed_entries_without_platforms_are_different_images(tmp_path: Path) -> None:
    """Two unnamed index entries without platforms are two images: ask for @N."""
    oci = OciLayout()
    first, second = oci.image(tars(1, "x")), oci.image(tars(1, "y"))
    oci.tag(first)
    oci.tag(second)
    path = str(oci.write_dir(tmp_path / "l"))
    with pytest.raises(NotFoundError, match=r"@0 \(linux/amd64\), @1 \(linux/amd64\)"):
        open_image(path)
    with open_image(path, ref="@1") as image:
        assert image.manifest_digest == second["digest"] and image.ref == "@1"


def two_tags(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A layout with two different images tagged v1 and v2."""
    oci = OciLayout()
    d1, d2 = oci.image(tars(1, "one")), oci.image(tars(2, "two"))
    oci.tag(d1, "v1")
    oci.tag(d2, "v2")
    return str(oci.write_dir(tmp_path / "l")), {
        "v1": d1["digest"],
        "v2": d2["digest"],
        "@1": d2["digest"],
    }


@pytest.mark.parametrize("ref", ["v1", "v2", "@1"])
def test_ref_selects_among_tags(tmp_path: Path, ref: str) -> None:
    """``ref`` picks a tag (``ref.name``) or the N-th entry."""
    path, digests = two_tags(tmp_path)
    with open_image(path, ref=ref) as image:
        assert image.manifest_digest == digests[ref]


def test_ambiguous_without_ref_lists_the_refs(tmp_path: Path) -> None:
    """Two images and no ref: a NotFoundError listing both names."""
    path, _ = two_tags(tmp_path)
    with pytest.raises(NotFoundError) as info:
        open_image(path)
    text = one_line_error(info.value)
    assert "v1" in text and "v2" in text and "--ref" in text


def test_unknown_ref_lists_the_refs(tmp_path: Path) -> None:
    """A ref that names nothing: NotFoundError listing what is there."""
    path, _ = two_tags(tmp_path)
    with pytest.raises(NotFoundError, match=r"'v3'.*v1.*v2"):
        open_image(path, ref="v3")


def test_same_image_under_two_tags_is_not_ambiguous(tmp_path: Path) -> None:
    """Two index entries for one manifest are one image."""
    oci = OciLayout()
    desc = oci.image(tars(1))
    oci.tag(desc, "latest")
    oci.tag(desc, "v1")
    with open_image(str(oci.write_dir(tmp_path / "l"))) as image:
        assert image.manifest_digest == desc["digest"]


def test_malformed_platform_is_a_value_error(tmp_path: Path) -> None:
    """A platform that is not os/arch[/variant] is a ValueError (a usage error)."""
    oci, _, _ = mixed_layout(tmp_path)
    with pytest.raises(ValueError, match="os/arch"):
        open_image(str(oci.write_dir(tmp_path / "l")), platform="amd64")


def test_available_lists_images_and_platforms(tmp_path: Path) -> None:
    """``available`` lists every image manifest with its platform and presence."""
    oci, digests = multi_platform(tmp_path)
    path = oci.write_dir(tmp_path / "l", skip=frozenset({digests["linux/arm/v7"]}))
    listing = available(str(path))
    assert [(e["platform"], e["present"]) for e in listing] == [
        ("linux/amd64", True),
        ("linux/arm64/v8", True),
        ("linux/arm/v7", False),
    ]
    assert all(e["index"] == 0 and "docker.io/library/multi:latest" in e["names"] for e in listing)


# -- docker save ----------------------------------------------------------------------------


def legacy_with_repeat(link: str) -> tuple[DockerSave, list[bytes]]:
    """A legacy save whose layers 0 and 2 are byte-identical (the repeat is a link)."""
    base, other = tars(2, "legacy")
    layers = [base, other, base]
    save = DockerSave()
    save.image(layers, ["busybox:latest"], link=link)
    return save, layers


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_legacy_docker_save_follows_linked_layer_tar(
    tmp_path: Path, link: str, compression: str
) -> None:
    """A repeated layer stored as a link is read at its own position, with the target's bytes."""
    save, layers = legacy_with_repeat(link)
    members = dict(save.members())
    linked = [n for n, c in members.items() if isinstance(c, tuple)]
    assert len(linked) == 1  # the fixture really has a link
    path = save.write(tmp_path / "save.tar", compression)
    with open_image(str(path)) as image:
        assert image.format == "docker-save"
        assert image.ref == "busybox:latest"
        assert image.manifest_digest is None
        assert [layer.digest for layer in image.layers] == [None, None, None]
        assert [layer.diff_id for layer in image.layers] == [sha256(t) for t in layers]
        assert image.layers[2].name == linked[0]
        assert [layer.media_type for layer in image.layers] == ["", "", ""]
        bodies = [read_all(layer.open()) for layer in image.layers]
        assert bodies == layers
        assert [layer.size for layer in image.layers] == [len(t) for t in layers]
        assert image.config_digest == sha256(members[save.manifest[0]["Config"]])  # type: ignore[arg-type]


@pytest.mark.parametrize("ref", ["busybox:latest", "busybox", "docker.io/library/busybox", "@1"])
def test_legacy_multi_image_save_selects_by_repo_tag(tmp_path: Path, ref: str) -> None:
    """A save with two images takes RepoTags refs, normalised as docker does, or @N."""
    save = DockerSave()
    save.image(tars(1, "alpine"), ["alpine:3.19"])
    want = tars(2, "busybox")
    save.image(want, ["busybox:latest"])
    with open_image(str(save.write(tmp_path / "s.tar")), ref=ref) as image:
        assert [layer.diff_id for layer in image.layers] == [sha256(t) for t in want]
    with pytest.raises(NotFoundError) as info:
        open_image(str(tmp_path / "s.tar"))
    text = one_line_error(info.value)
    assert "alpine:3.19" in text and "busybox:latest" in text


def test_crane_style_tarball(tmp_path: Path) -> None:
    """A ggcr/crane tarball (config ``sha256:<hex>``, ``<hex>.tar.gz`` layers) reads."""
    layers = tars(2, "crane")
    blobs = [compress(t, "gzip") for t in layers]
    config = to_json(config_doc([sha256(t) for t in layers]))
    names = [sha256(b).split(":")[1] + ".tar.gz" for b in blobs]
    manifest = [{"Config": sha256(config), "RepoTags": ["crane:1"], "Layers": names}]
    members = [*zip(names, blobs, strict=True), (sha256(config), config)]
    path = write_tar(tmp_path / "c.tar", [*members, ("manifest.json", to_json(manifest))])
    with open_image(str(path)) as image:
        assert image.format == "docker-save" and image.config_digest == sha256(config)
        assert [read_all(layer.open()) for layer in image.layers] == blobs
        assert_layers_verify(image)


def test_nix_style_image_with_many_layers(tmp_path: Path) -> None:
    """A nix-style save (130 layers, every mtime 1) gives all layers in manifest order."""
    layers = [
        Layer()
        .dir("nix", mtime=1)
        .dir("nix/store", mtime=1)
        .file(f"nix/store/{i:03d}-pkg", f"pkg {i}\n".encode(), mtime=1)
        .tar()
        for i in range(130)
    ]
    save = DockerSave()
    save.image(layers, ["nix-image:abc"])
    with open_image(str(save.write(tmp_path / "nix.tar.gz", "gzip"))) as image:
        assert len(image.layers) == 130
        assert [layer.diff_id for layer in image.layers] == [sha256(t) for t in layers]
        assert_layers_verify(image)


def test_docker_save_directory_and_gnu_tar_rearchived(tmp_path: Path) -> None:
    """An unpacked save directory, and GNU tar's ``./``-prefixed re-archive of it, read the same."""
    save, layers = legacy_with_repeat("symlink")
    path = save.write(tmp_path / "s.tar")
    top = tmp_path / "dir"
    top.mkdir()
    subprocess.run(["tar", "-C", str(top), "-xf", str(path)], check=True)
    with open_image(str(top)) as image:
        assert image.format == "docker-save"
        assert [read_all(layer.open()) for layer in image.layers] == layers
    again = tmp_path / "again.tgz"
    subprocess.run(["tar", "-C", str(top), "-czf", str(again), "."], check=True)
    with open_image(str(again)) as image:
        assert [read_all(layer.open()) for layer in image.layers] == layers


def test_zstd_archive_with_a_leading_skippable_frame(tmp_path: Path) -> None:
    """A zstd archive that starts with a skippable frame is recognised as zstd."""
    save, layers = legacy_with_repeat("symlink")
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"meta"
    path = tmp_path / "s.tar.zst"
    path.write_bytes(skippable + compress(tar_bytes(save.members()), "zstd"))
    with open_image(str(path)) as image:
        assert [read_all(layer.open()) for layer in image.layers] == layers


def test_index_ref_reports_the_image_name_and_streams_are_named(tmp_path: Path) -> None:
    """Choosing by ``@N`` reports the image's name; layer streams carry the layer's name."""
    save = DockerSave()
    save.image(tars(1, "a"), ["a:1"])
    paths = save.image(tars(1, "b"), ["b:2"])
    with open_image(str(save.write(tmp_path / "s.tar.gz", "gzip")), ref="@1") as image:
        assert image.ref == "b:2"
        with image.layers[0].open() as f:
            assert f.name == paths[0]


@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize(
    "ref", ["busybox:latest", "busybox", "latest", "docker.io/library/busybox:latest"]
)
def test_docker25_save_uses_the_oci_index(tmp_path: Path, compression: str, ref: str) -> None:
    """A docker 25+ save is read through its index, by tag or full name, digests = DiffIDs."""
    layers = tars(3, "d25")
    path = docker25(tmp_path / "d.tar", [(layers, ["busybox:latest"])], compression)
    with open_image(str(path), ref=ref) as image:
        assert image.format == "docker-save-oci"
        assert image.manifest_digest is not None
        assert image.warnings == ()
        assert [layer.digest for layer in image.layers] == [sha256(t) for t in layers]
        assert [layer.diff_id for layer in image.layers] == [sha256(t) for t in layers]
        assert_layers_verify(image)


def test_docker25_two_images_need_a_ref(tmp_path: Path) -> None:
    """A docker 25+ save of two images lists them when no ref is given."""
    path = docker25(tmp_path / "d.tar", [(tars(1, "a"), ["a:1"]), (tars(1, "b"), ["b:2"])])
    with pytest.raises(NotFoundError) as info:
        open_image(str(path))
    text = one_line_error(info.value)
    assert "docker.io/library/a:1" in text and "docker.io/library/b:2" in text
    with open_image(str(path), ref="b:2") as image:
        assert image.layers[0].diff_id == sha256(tars(1, "b")[0])


def test_docker25_empty_oci_layers_trusts_manifest_json(tmp_path: Path) -> None:
    """An OCI manifest with ``layers: []`` (moby#47065) gives manifest.json's layers, warning."""
    layers = tars(2, "bug")
    path = docker25(tmp_path / "d.tar", [(layers, ["x:1"])], oci_layers_empty=True)
    with open_image(str(path)) as image:
        assert [layer.diff_id for layer in image.layers] == [sha256(t) for t in layers]
        assert len(image.warnings) == 1 and "manifest.json" in image.warnings[0]
        assert_layers_verify(image)


def test_docker25_null_index_falls_back_to_manifest_json(tmp_path: Path) -> None:
    """``"manifests": null`` in index.json (moby#47210) falls back to manifest.json, warning."""
    layers = tars(2, "null")
    path = docker25(tmp_path / "d.tar", [(layers, ["x:1"])], index_null=True)
    with open_image(str(path), ref="x:1") as image:
        assert [layer.diff_id for layer in image.layers] == [sha256(t) for t in layers]
        assert len(image.warnings) == 1 and "index.json" in image.warnings[0]


def test_docker29_containerd_save_with_compressed_blobs(tmp_path: Path) -> None:
    """A containerd-store save (nested index, attestation, gzip blobs) matches manifest.json."""
    oci = OciLayout()
    layers = tars(2, "ctrd")
    desc = oci.image(layers, compression="gzip", platform={"os": "linux", "architecture": "amd64"})
    att = oci.image(tars(1, "att"), platform={"os": "unknown", "architecture": "unknown"})
    oci.tag(
        oci.index([desc, att]),
        "latest",
        **{"io.containerd.image.name": "docker.io/library/c:latest"},
    )
    manifest = json.loads(oci.blobs[desc["digest"]])
    entry = {
        "Config": "blobs/sha256/" + manifest["config"]["digest"].split(":")[1],
        "RepoTags": ["c:latest"],
        "Layers": ["blobs/sha256/" + d["digest"].split(":")[1] for d in manifest["layers"]],
    }
    members = [*oci.members(), ("manifest.json", to_json([entry])), ("repositories", b"{}")]
    path = write_tar(tmp_path / "c.tar", members)
    with open_image(str(path), ref="c") as image:
        assert image.format == "docker-save-oci" and image.warnings == ()
        assert [layer.media_type for layer in image.layers] == [
            manifest["layers"][0]["mediaType"]
        ] * 2
        assert all(layer.digest != layer.diff_id for layer in image.layers)
        assert_layers_verify(image)


# -- compressed archives: one pass, bounded memory ------------------------------------------------


def big_save(tmp_path: Path, layer_mb: int, count: int, compression: str) -> tuple[Path, list[str]]:
    """A save of ``count`` incompressible layers of ``layer_mb`` MiB each, compressed whole."""
    rng = random.Random(7)
    layers = [Layer().file("blob", rng.randbytes(layer_mb << 20)).tar() for _ in range(count)]
    save = DockerSave()
    save.image(layers, ["big:1"])
    path = tmp_path / f"big.tar.{compression}"
    if compression == "gzip":
        from isal import igzip

        path.write_bytes(igzip.compress(tar_bytes(save.members()), compresslevel=0))
    else:
        path.write_bytes(compress(tar_bytes(save.members()), compression))
    return path, [sha256(t) for t in layers]


needs_proc_io = pytest.mark.skipif(
    not proc_io_available(), reason="bytes read are measured with /proc/self/io (Linux)"
)


def drain(image: Image) -> list[str]:
    """Read every layer in order; return sha256 of each (what apply would hash)."""
    out = []
    for layer in image.layers:
        h = hashlib.sha256()
        with layer.open() as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        out.append("sha256:" + h.hexdigest())
    return out


@needs_proc_io
def test_gzip_archive_is_inflated_about_once_with_bounded_memory(tmp_path: Path) -> None:
    """Opening a ~100 MB gzip save reads it once; all layers read ≤ 1.2x more; memory < 32 MB.

    The save's members are sorted by layer id, not in manifest order, so
    reading layers in order jumps around the archive: checkpoints keep each
    jump from inflating the archive again from its start.
    """
    path, diff_ids = big_save(tmp_path, 8, 12, "gzip")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        before = rchar()
        with open_image(str(path)) as image:
            opened = rchar()
            order = [layer.name for layer in image.layers]
            assert order != sorted(order), "fixture must store layers out of manifest order"
            assert drain(image) == diff_ids
            done = rchar()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert opened - before <= 1.1 * size, (opened - before) / size
    assert done - opened <= 1.2 * size, (done - opened) / size
    assert peak < 32 << 20, peak


@needs_proc_io
def test_zstd_archive_in_order_is_read_in_one_more_pass(tmp_path: Path) -> None:
    """A zstd save whose layers are stored in manifest order is read once after indexing."""
    rng = random.Random(3)
    layers = [Layer().file("blob", rng.randbytes(2 << 20)).tar() for _ in range(4)]
    manifest_layers = [f"{i:02d}/layer.tar" for i in range(4)]
    config = to_json(config_doc([sha256(t) for t in layers]))
    members = [(p, t) for p, t in zip(manifest_layers, layers, strict=True)]
    members += [
        ("config.json", config),
        (
            "manifest.json",
            to_json([{"Config": "config.json", "RepoTags": ["z:1"], "Layers": manifest_layers}]),
        ),
    ]
    path = write_tar(tmp_path / "z.tar.zst", members, "zstd")
    size = path.stat().st_size
    with open_image(str(path)) as image:
        opened = rchar()
        assert drain(image) == [sha256(t) for t in layers]
        assert rchar() - opened <= 1.2 * size


@needs_proc_io
def test_plain_archive_open_reads_only_headers(tmp_path: Path) -> None:
    """Opening an uncompressed save seeks over layer data instead of reading it."""
    rng = random.Random(5)
    layers = [Layer().file("blob", rng.randbytes(4 << 20)).tar() for _ in range(4)]
    save = DockerSave()
    save.image(layers, ["p:1"])
    path = save.write(tmp_path / "p.tar")
    before = rchar()
    with open_image(str(path)) as image:
        assert rchar() - before < 256 << 10
        assert drain(image) == [sha256(t) for t in layers]


def test_interleaved_layer_streams_from_gzip_archive(tmp_path: Path) -> None:
    """Two layers read alternately from one gzip archive each get their own bytes."""
    path, diff_ids = big_save(tmp_path, 5, 3, "gzip")
    with open_image(str(path)) as image:
        hs = [hashlib.sha256() for _ in image.layers]
        streams = [layer.open() for layer in image.layers]
        active = True
        while active:
            active = False
            for h, f in zip(hs, reversed(streams), strict=True):
                chunk = f.read(300_000)
                if chunk:
                    h.update(chunk)
                    active = True
        for f in streams:
            f.close()
    assert ["sha256:" + h.hexdigest() for h in hs] == list(reversed(diff_ids))


def test_multi_member_gzip_archive(tmp_path: Path) -> None:
    """An archive gzipped as several concatenated members reads as one."""
    save, layers = legacy_with_repeat("symlink")
    raw = tar_bytes(save.members())
    cut = len(raw) // 3
    path = tmp_path / "mm.tar.gz"
    path.write_bytes(
        gzip.compress(raw[:cut], mtime=0) + gzip.compress(raw[cut:], mtime=0) + bytes(100)
    )
    with open_image(str(path)) as image:
        assert [read_all(layer.open()) for layer in image.layers] == layers


def test_layers_cannot_be_read_after_close(tmp_path: Path) -> None:
    """Once the image is closed, opening a (non-cached) layer is an error."""
    path, _ = big_save(tmp_path, 2, 1, "none")
    with open_image(str(path)) as image:
        layer = image.layers[0]
    with pytest.raises(OperationalError, match="closed"):
        read_all(layer.open())


def test_builders_are_reproducible(tmp_path: Path) -> None:
    """Building a fixture twice gives the same bytes (stable digests across runs)."""
    first = legacy_with_repeat("symlink")[0].write(tmp_path / "a.tar", "gzip").read_bytes()
    second = legacy_with_repeat("symlink")[0].write(tmp_path / "b.tar", "gzip").read_bytes()
    assert first == second


# -- bad archives --------------------------------------------------------------------------------


def oci_dir_with(
    tmp_path: Path, mutate: Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], None]
) -> Path:
    """A one-image layout whose manifest, config and index entry ``mutate`` may change."""
    layers = tars(2, "bad")
    oci = OciLayout()
    config = config_doc([sha256(t) for t in layers])
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "layers": [
            oci.blob(compress(t, "gzip"), "application/vnd.oci.image.layer.v1.tar+gzip")
            for t in layers
        ],
    }
    entry: dict[str, Any] = {"mediaType": OCI_MANIFEST}
    mutate(manifest, config, entry)
    manifest["config"] = oci.blob(to_json(config), "application/vnd.oci.image.config.v1+json")
    desc = oci.blob(to_json(manifest), OCI_MANIFEST)
    desc.update(entry)
    oci.tag(desc, "v1")
    return oci.write_dir(tmp_path / "bad")


def _set(
    path: str, value: object
) -> Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], None]:
    def mutate(manifest: dict[str, Any], config: dict[str, Any], entry: dict[str, Any]) -> None:
        docs = {"manifest": manifest, "config": config, "entry": entry}
        keys = path.split(".")
        target: Any = docs[keys[0]]
        for key in keys[1:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


L0, L1 = "manifest.layers.0", "manifest.layers.1"
NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
SHA = "sha256:"

# id, field to change (document.path), its new value, error class, text in the message
OCI_ERRORS = [
    ("count-mismatch", "config.rootfs.diff_ids", [EMPTY_TAR_DIFF_ID], BadInputError, "2 layers"),
    ("rootfs-type", "config.rootfs.type", "snapshots", BadInputError, "rootfs.type"),
    ("no-rootfs", "config.rootfs", None, BadInputError, "rootfs"),
    ("negative-size", f"{L0}.size", -1, BadInputError, "negative size"),
    ("size-not-int", f"{L0}.size", "12", BadInputError, "not an integer"),
    ("digest-traversal", f"{L1}.digest", SHA + "../../etc/passwd", BadInputError, "not a digest"),
    ("digest-uppercase", f"{L1}.digest", SHA + "A" * 64, BadInputError, "not a valid sha256"),
    ("digest-short", f"{L1}.digest", SHA + "a" * 63, BadInputError, "not a valid sha256"),
    ("sha512-short", f"{L1}.digest", "sha512:" + "a" * 64, BadInputError, "not a valid sha512"),
    ("sha512-missing", f"{L1}.digest", "sha512:" + "a" * 128, NotFoundError, "layer 2/2"),
    ("no-algorithm", f"{L1}.digest", "a" * 64, BadInputError, "not a digest"),
    ("diff-id-bad", "config.rootfs.diff_ids", [SHA + "zz", SHA], BadInputError, "diff_ids[0]"),
    ("layer-missing", f"{L1}.digest", SHA + "b" * 64, NotFoundError, "layer 2/2"),
    ("unknown-media-type", f"{L1}.mediaType", "application/x-rar", BadInputError, "layer 2/2"),
    ("non-distributable", f"{L0}.mediaType", NONDIST, BadInputError, "non-distributable"),
    ("foreign", f"{L0}.mediaType", FOREIGN, BadInputError, "layer 1/2"),
    ("layers-not-list", "manifest.layers", None, BadInputError, "layers is null"),
    ("artifact", "entry.artifactType", "application/x-sbom", NotFoundError, "no image manifest"),
    ("entry-negative", "entry.size", -5, BadInputError, "negative size"),
]


@pytest.mark.parametrize(
    ("name", "field", "value", "error", "text"), OCI_ERRORS, ids=[e[0] for e in OCI_ERRORS]
)
def test_bad_oci_layouts(
    tmp_path: Path, name: str, field: str, value: object, error: type[ExtractorError], text: str
) -> None:
    """Each malformed manifest or config is its own error class with a one-line message."""
    path = oci_dir_with(tmp_path, _set(field, value))
    with pytest.raises(ExtractorError) as info:
        open_image(str(path))
    assert type(info.value) is error, info.value
    assert text in one_line_error(info.value)


def test_unsupported_digest_algorithm_is_not_used_as_a_path(tmp_path: Path) -> None:
    """A digest with an unknown algorithm fails as a bad digest even if that path exists."""
    path = oci_dir_with(tmp_path, _set("manifest.layers.1.digest", "md5:" + "a" * 32))
    (path / "blobs" / "md5").mkdir()
    (path / "blobs" / "md5" / ("a" * 32)).write_bytes(tars(1)[0])
    with pytest.raises(BadInputError, match="unsupported digest algorithm 'md5'"):
        open_image(str(path))


@pytest.mark.parametrize(
    ("user", "text"), [("0000:1000", "digest mismatch"), ("0:0", "the descriptor says")]
)
def test_tampered_config_fails_unless_verify_is_off(tmp_path: Path, user: str, text: str) -> None:
    """A config blob must match its descriptor's digest and size; ``verify=False`` skips that."""
    oci, _, desc = mixed_layout(tmp_path)
    top = oci.write_dir(tmp_path / "l")
    manifest = json.loads(oci.blobs[desc["digest"]])
    config_file = top / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]
    config_file.write_bytes(config_file.read_bytes().replace(b'"1000:1000"', f'"{user}"'.encode()))
    with pytest.raises(BadInputError) as info:
        open_image(str(top))
    assert text in one_line_error(info.value)
    with open_image(str(top), verify=False) as image:
        assert image.config["config"]["User"] == user


def test_legacy_config_not_matching_its_name_fails(tmp_path: Path) -> None:
    """A docker save config named ``<sha256>.json`` must hash to that name."""
    save, _ = legacy_with_repeat("symlink")
    name = save.manifest[0]["Config"]
    save.files[name] = save.files[name].replace(b"amd64", b"arm64")  # type: ignore[union-attr]
    path = save.write(tmp_path / "s.tar")
    with pytest.raises(BadInputError, match="digest mismatch"):
        open_image(str(path))
    with open_image(str(path), verify=False) as image:
        assert image.platform == "linux/arm64"


def write_raw_layout(tmp_path: Path, index: bytes, blobs: dict[str, bytes] | None = None) -> Path:
    """A layout directory with a hand-written index.json."""
    top = tmp_path / "raw"
    (top / "blobs" / "sha256").mkdir(parents=True)
    (top / "oci-layout").write_bytes(to_json({"imageLayoutVersion": "1.0.0"}))
    (top / "index.json").write_bytes(index)
    for digest, data in (blobs or {}).items():
        (top / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
    return top


def test_bad_json_index(tmp_path: Path) -> None:
    """index.json that is not JSON is a BadInputError naming it."""
    with pytest.raises(BadInputError, match=r"index.json: bad JSON"):
        open_image(str(write_raw_layout(tmp_path, b'{"manifests": [')))


def test_index_manifests_not_a_list(tmp_path: Path) -> None:
    """index.json whose manifests is not a list is a BadInputError."""
    with pytest.raises(BadInputError, match="manifests is an object, not a list"):
        open_image(str(write_raw_layout(tmp_path, b'{"manifests": {}}')))


def test_missing_manifest_blob(tmp_path: Path) -> None:
    """An index entry whose manifest blob is absent is a NotFoundError."""
    index = to_json(
        {"manifests": [{"mediaType": OCI_MANIFEST, "digest": "sha256:" + "c" * 64, "size": 3}]}
    )
    with pytest.raises(NotFoundError, match="not in this archive"):
        open_image(str(write_raw_layout(tmp_path, index)))


def test_missing_config_blob(tmp_path: Path) -> None:
    """A manifest whose config blob is absent is a NotFoundError."""
    manifest = to_json(
        {
            "schemaVersion": 2,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + "d" * 64,
                "size": 2,
            },
            "layers": [],
        }
    )
    index = to_json(
        {
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest)}
            ]
        }
    )
    with pytest.raises(NotFoundError, match="config"):
        open_image(str(write_raw_layout(tmp_path, index, {sha256(manifest): manifest})))


def test_bad_json_manifest_blob(tmp_path: Path) -> None:
    """A manifest blob that is not JSON is a BadInputError naming the blob."""
    bad = b"{nope"
    index = to_json(
        {"manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(bad), "size": len(bad)}]}
    )
    with pytest.raises(BadInputError, match=r"blobs/sha256/[0-9a-f]{64}: bad JSON"):
        open_image(str(write_raw_layout(tmp_path, index, {sha256(bad): bad})))


def test_nested_indexes_too_deep(tmp_path: Path) -> None:
    """Indexes nested beyond the cap are a BadInputError, not a recursion crash."""
    oci = OciLayout()
    desc = oci.image(tars(1))
    for _ in range(10):
        desc = oci.index([desc])
    oci.tag(desc, "deep")
    with pytest.raises(BadInputError, match="nested"):
        open_image(str(oci.write_dir(tmp_path / "l")))


def legacy_members(
    layer_link: tuple[str, str] | bytes, extra: list[tuple[str, Any]] | None = None
) -> list[Any]:
    """A legacy save of two layers whose second ``layer.tar`` is ``layer_link``."""
    a, b = tars(2, "link")
    config = to_json(config_doc([sha256(a), sha256(b)]))
    manifest = [
        {"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["aa/layer.tar", "bb/layer.tar"]}
    ]
    return [
        ("aa/layer.tar", a),
        ("bb/layer.tar", layer_link),
        *(extra or []),
        ("c.json", config),
        ("manifest.json", to_json(manifest)),
    ]


LINK_ERRORS = [
    ("outside", ("symlink", "../../etc/passwd"), [], "outside the archive"),
    ("absolute", ("symlink", "/etc/passwd"), [], "absolute"),
    (
        "cycle",
        ("symlink", "../cc/layer.tar"),
        [("cc/layer.tar", ("symlink", "../bb/layer.tar"))],
        "cycle",
    ),
    ("self", ("symlink", "layer.tar"), [], "cycle"),
    ("dangling", ("symlink", "../zz/layer.tar"), [], "not in the archive"),
    ("hardlink-outside", ("hardlink", "../aa/layer.tar"), [], "outside the archive"),
    ("hardlink-missing", ("hardlink", "zz/layer.tar"), [], "not in the archive"),
    ("to-directory", ("symlink", "../aa"), [], "not a file"),
]


@pytest.mark.parametrize(
    ("name", "link", "extra", "text"), LINK_ERRORS, ids=[e[0] for e in LINK_ERRORS]
)
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_bad_layer_links(
    tmp_path: Path, name: str, link: tuple[str, str], extra: list[Any], text: str, compression: str
) -> None:
    """A layer.tar link pointing outside, into a cycle or at nothing is a one-line BadInputError."""
    path = write_tar(tmp_path / "s.tar", legacy_members(link, extra), compression)
    with pytest.raises(BadInputError) as info:
        open_image(str(path))
    message = one_line_error(info.value)
    assert text in message and "layer 2/2" in message


def test_link_through_directory_symlink_is_followed(tmp_path: Path) -> None:
    """A link whose path crosses a symlinked directory inside the archive resolves."""
    members = legacy_members(("symlink", "../dd/layer.tar"), [("dd", ("symlink", "aa"))])
    a, _ = tars(2, "link")
    with open_image(str(write_tar(tmp_path / "s.tar", members))) as image:
        assert read_all(image.layers[1].open()) == a


@pytest.mark.parametrize(
    ("name", "members", "error", "text"),
    [
        ("bad-json", [("manifest.json", b"[{")], BadInputError, "manifest.json: bad JSON"),
        ("not-a-list", [("manifest.json", b"{}")], BadInputError, "not a list"),
        (
            "layer-escapes",
            [("manifest.json", to_json([{"Config": "c.json", "Layers": ["../x/layer.tar"]}]))],
            BadInputError,
            "outside the image",
        ),
        (
            "layer-absolute",
            [("manifest.json", to_json([{"Config": "c.json", "Layers": ["/x/layer.tar"]}]))],
            BadInputError,
            "not relative",
        ),
        (
            "layers-wrong-type",
            [("manifest.json", to_json([{"Config": "c.json", "Layers": [7]}]))],
            BadInputError,
            "Layers[0] is a int",
        ),
        (
            "config-missing",
            [("manifest.json", to_json([{"Config": "c.json", "Layers": []}]))],
            NotFoundError,
            "c.json",
        ),
        (
            "layer-missing",
            [
                ("c.json", to_json(config_doc([EMPTY_TAR_DIFF_ID]))),
                ("manifest.json", to_json([{"Config": "c.json", "Layers": ["x/layer.tar"]}])),
            ],
            NotFoundError,
            "layer 1/1 (x/layer.tar)",
        ),
        (
            "config-not-object",
            [("c.json", b"[]"), ("manifest.json", to_json([{"Config": "c.json", "Layers": []}]))],
            BadInputError,
            "c.json is a list",
        ),
        ("no-metadata", [("layer.tar", tars(1)[0])], BadInputError, "not an image"),
    ],
)
def test_bad_docker_saves(
    tmp_path: Path, name: str, members: list[Any], error: type[ExtractorError], text: str
) -> None:
    """Each malformed docker save is its own error class with a one-line message."""
    with pytest.raises(ExtractorError) as info:
        open_image(str(write_tar(tmp_path / "s.tar", members)))
    assert type(info.value) is error
    assert text in one_line_error(info.value)


def test_foreign_layer_in_layer_sources(tmp_path: Path) -> None:
    """A docker save layer listed in LayerSources as foreign is refused, naming the layer."""
    a = tars(1)[0]
    source = {
        "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "digest": "sha256:" + "e" * 64,
        "size": 10,
        "urls": ["https://example.com/base"],
    }
    manifest = [
        {"Config": "c.json", "Layers": ["aa/layer.tar"], "LayerSources": {sha256(a): source}}
    ]
    members = [
        ("aa/layer.tar", a),
        ("c.json", to_json(config_doc([sha256(a)]))),
        ("manifest.json", to_json(manifest)),
    ]
    with pytest.raises(BadInputError) as info:
        open_image(str(write_tar(tmp_path / "s.tar", members)))
    text = one_line_error(info.value)
    assert "layer 1/1 (aa/layer.tar)" in text and "foreign" in text and "example.com" in text


def test_files_that_are_not_images(tmp_path: Path) -> None:
    """Missing paths, random bytes, truncated and corrupt archives each give their error."""
    with pytest.raises(NotFoundError, match="no such file"):
        open_image(str(tmp_path / "nope.tar"))
    (tmp_path / "junk").write_bytes(random.Random(1).randbytes(4096))
    with pytest.raises(BadInputError, match="not a tar archive"):
        open_image(str(tmp_path / "junk"))
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(BadInputError, match="not an image"):
        open_image(str(tmp_path / "empty-dir"))
    save, _ = legacy_with_repeat("symlink")
    whole = tar_bytes(save.members())
    (tmp_path / "cut.tar").write_bytes(whole[: len(whole) // 2 + 100])
    with pytest.raises(BadInputError, match="truncated"):
        open_image(str(tmp_path / "cut.tar"))
    gz = gzip.compress(whole, mtime=0)
    (tmp_path / "cut.tar.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(BadInputError, match="truncated"):
        open_image(str(tmp_path / "cut.tar.gz"))
    corrupt = bytearray(gz)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 64] = bytes(64)
    (tmp_path / "bad.tar.gz").write_bytes(bytes(corrupt))
    with pytest.raises(BadInputError, match="corrupt"):
        open_image(str(tmp_path / "bad.tar.gz"))
    zs = zstandard.ZstdCompressor().compress(whole)
    (tmp_path / "cut.tar.zst").write_bytes(zs[: len(zs) // 2])
    with pytest.raises(BadInputError):
        open_image(str(tmp_path / "cut.tar.zst"))
    (tmp_path / "x.tar.xz").write_bytes(b"\xfd7zXZ\x00" + bytes(100))
    with pytest.raises(BadInputError, match="xz-compressed"):
        open_image(str(tmp_path / "x.tar.xz"))


def test_symlink_out_of_a_layout_directory_is_refused(tmp_path: Path) -> None:
    """A blob in a layout directory that is a symlink to a host file is refused."""
    oci, _, _ = mixed_layout(tmp_path)
    top = oci.write_dir(tmp_path / "l")
    layer = json.loads(
        oci.blobs[json.loads((top / "index.json").read_bytes())["manifests"][0]["digest"]]
    )["layers"][0]
    blob = top / "blobs" / "sha256" / layer["digest"].split(":")[1]
    outside = tmp_path / "host-file"
    outside.write_bytes(blob.read_bytes())
    blob.unlink()
    blob.symlink_to(outside)
    with pytest.raises(BadInputError, match="outside the image directory"):
        open_image(str(top))


# -- real tools ------------------------------------------------------------------------------------


def need(tool: str) -> None:
    """Skip with a reason when ``tool`` is not installed."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


@pytest.fixture
def umoci_layout(tmp_path: Path) -> Path:
    """An OCI layout made by umoci: three layers (one repeated content), tag v1."""
    need("umoci")
    layout = tmp_path / "oci"
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_text("hello\n")
    (src / "bye").write_text("bye\n")
    run = lambda *a: subprocess.run(["umoci", *a], check=True, capture_output=True)  # noqa: E731
    run("init", "--layout", str(layout))
    run("new", "--image", f"{layout}:v1")
    run("insert", "--image", f"{layout}:v1", str(src / "hello"), "/hello")
    run("insert", "--image", f"{layout}:v1", str(src / "bye"), "/etc/bye")
    run("insert", "--image", f"{layout}:v1", str(src / "hello"), "/hello")
    return layout


@pytest.mark.peer
def test_umoci_layout(umoci_layout: Path) -> None:
    """A layout written by umoci opens; its gzip layers verify."""
    with open_image(str(umoci_layout), ref="v1") as image:
        assert image.format == "oci-layout" and len(image.layers) == 3
        assert all(layer.media_type.endswith("tar+gzip") for layer in image.layers)
        assert all(layer.created_by == "umoci insert" for layer in image.layers)
        assert_layers_verify(image)


@pytest.mark.peer
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_skopeo_docker_archive_and_oci_archive_agree_with_the_layout(
    umoci_layout: Path, tmp_path: Path, compression: str
) -> None:
    """skopeo's docker-archive and oci-archive of a layout give the layout's DiffIDs in order."""
    need("skopeo")
    docker_tar = tmp_path / "docker.tar"
    oci_tar = tmp_path / "oci.tar"
    for dest in (f"docker-archive:{docker_tar}:example/app:v1", f"oci-archive:{oci_tar}:v1"):
        subprocess.run(
            ["skopeo", "copy", "-q", f"oci:{umoci_layout}:v1", dest],
            check=True,
            capture_output=True,
        )
    if compression == "gzip":
        for p in (docker_tar, oci_tar):
            p.write_bytes(gzip.compress(p.read_bytes(), mtime=0))
    with open_image(str(umoci_layout)) as layout:
        expected = [layer.diff_id for layer in layout.layers]
        config_digest = layout.config_digest
    with open_image(str(docker_tar), ref="example/app:v1") as image:
        assert image.format == "docker-save"
        assert [layer.diff_id for layer in image.layers] == expected
        assert image.config_digest == config_digest
        assert_layers_verify(image)
    with open_image(str(oci_tar), ref="v1") as image:
        assert image.format == "oci-archive"
        assert [layer.diff_id for layer in image.layers] == expected
        assert_layers_verify(image)
