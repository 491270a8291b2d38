"""`extractor unpack` and `extractor inspect`: whole images, verified while streaming."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from builders import Layer
from imagebuilders import DockerSave, OciLayout, compress, config_doc, docker25, sha256

BASE = Layer().dir("etc").file("etc/passwd", b"root\n").file("etc/shadow", b"x\n").tar()
UPDATE = Layer().whiteout("etc/shadow").file("etc/os-release", b"v2\n").tar()
APP = Layer().dir("app").file("app/run", b"#!/bin/sh\n", mode=0o755).tar()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as users do, as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "extractor", *args], capture_output=True, text=True
    )


def tree(root: Path) -> dict[str, Any]:
    """{relative path: content, link target or 'dir'} for a whole tree."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("->", os.readlink(p))
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_bytes()
    return out


EXPECTED = {
    "etc": "dir",
    "etc/passwd": b"root\n",
    "etc/os-release": b"v2\n",
    "app": "dir",
    "app/run": b"#!/bin/sh\n",
}


def oci_layout(tmp_path: Path, compression: str | list[str] = "gzip") -> Path:
    oci = OciLayout()
    oci.tag(oci.image([BASE, UPDATE, APP], compression=compression), "v1")
    return oci.write_dir(tmp_path / "layout")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: oci_layout(p), id="oci-dir-gzip"),
        pytest.param(lambda p: oci_layout(p, ["gzip", "zstd", "none"]), id="oci-dir-mixed"),
        pytest.param(lambda p: _oci_tar(p, "none"), id="oci-archive"),
        pytest.param(lambda p: _oci_tar(p, "gzip"), id="oci-archive-gzipped"),
        pytest.param(lambda p: _oci_tar(p, "zstd"), id="oci-archive-zstd"),
        pytest.param(lambda p: _legacy(p, "none"), id="docker-save-legacy"),
        pytest.param(lambda p: _legacy(p, "gzip"), id="docker-save-legacy-gzipped"),
        pytest.param(
            lambda p: docker25(p / "img.tar", [([BASE, UPDATE, APP], ["demo:v1"])]),
            id="docker-save-25",
        ),
    ],
)
def test_unpack_each_format(tmp_path: Path, make: Any) -> None:
    """Every image form unpacks to the same tree, verified, with one summary line."""
    image = make(tmp_path)
    dest = tmp_path / "rootfs"
    proc = run("unpack", str(image), str(dest))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "(verified)" in proc.stderr and "3 layers" in proc.stderr
    assert tree(dest) == EXPECTED


def _oci_tar(tmp_path: Path, compression: str) -> Path:
    oci = OciLayout()
    oci.tag(oci.image([BASE, UPDATE, APP]), "v1")
    return oci.write_tar(tmp_path / "oci.tar", compression)


def _legacy(tmp_path: Path, compression: str) -> Path:
    save = DockerSave()
    save.image([BASE, UPDATE, APP], repo_tags=["demo:v1"])
    return save.write(tmp_path / "save.tar", compression)


def test_repeated_layer_behind_a_symlinked_layer_tar_is_applied_at_its_position(
    tmp_path: Path,
) -> None:
    """docker save links a repeated layer.tar to the first; the repeat still re-adds the file."""
    save = DockerSave()
    paths = save.image([BASE, UPDATE, BASE], repo_tags=["demo:v1"], link="symlink")
    assert save.files[paths[2]][0] == "symlink"  # the fixture really has the link
    image = save.write(tmp_path / "save.tar")
    dest = tmp_path / "rootfs"
    proc = run("unpack", str(image), str(dest))
    assert proc.returncode == 0, proc.stderr
    assert (dest / "etc" / "shadow").read_bytes() == b"x\n"  # back from layer 3
    assert (dest / "etc" / "os-release").read_bytes() == b"v2\n"


def test_platform_selection_from_a_nested_index(tmp_path: Path) -> None:
    """--platform picks one image of a multi-platform index, through a nested index."""
    oci = OciLayout()
    amd = oci.image([BASE], platform={"os": "linux", "architecture": "amd64"})
    arm = oci.image([APP], platform={"os": "linux", "architecture": "arm64", "variant": "v8"})
    oci.tag(oci.index([amd, arm]), "multi")
    layout = oci.write_dir(tmp_path / "layout")
    proc = run("unpack", "--platform", "linux/arm64", str(layout), str(tmp_path / "arm"))
    assert proc.returncode == 0, proc.stderr
    assert tree(tmp_path / "arm") == {"app": "dir", "app/run": b"#!/bin/sh\n"}
    proc = run("unpack", "--platform", "linux/s390x", str(layout), str(tmp_path / "none"))
    assert proc.returncode == 4
    assert len(proc.stderr.splitlines()) == 1 and "linux/arm64" in proc.stderr
    assert not (tmp_path / "none").exists()
    proc = run("unpack", "--platform", "nonsense", str(layout), str(tmp_path / "bad"))
    assert proc.returncode == 2


def test_image_without_layers_gives_an_empty_rootfs(tmp_path: Path) -> None:
    """An image with no layers at all unpacks to an empty directory."""
    oci = OciLayout()
    oci.tag(oci.image([], config=config_doc([])), "empty")
    layout = oci.write_dir(tmp_path / "layout")
    proc = run("unpack", str(layout), str(tmp_path / "rootfs"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rootfs").is_dir() and not os.listdir(tmp_path / "rootfs")


def test_nix_style_image_with_many_layers(tmp_path: Path) -> None:
    """Over 100 layers, every mtime 1, as nix's dockerTools writes them."""
    layers = [
        Layer()
        .dir("nix", mtime=1)
        .dir("nix/store", mtime=1)
        .file(f"nix/store/p{i:03}", f"{i}".encode(), mtime=1)
        .tar()
        for i in range(120)
    ]
    oci = OciLayout()
    oci.tag(oci.image(layers, compression="none"), "nix")
    proc = run("unpack", str(oci.write_dir(tmp_path / "layout")), str(tmp_path / "rootfs"))
    assert proc.returncode == 0, proc.stderr
    store = tmp_path / "rootfs" / "nix" / "store"
    assert len(os.listdir(store)) == 120
    assert {os.lstat(store / n).st_mtime for n in os.listdir(store)} == {1.0}
    assert os.lstat(store).st_mtime == 1.0


# -- verification ----------------------------------------------------------------------


def _tamper(layout: Path, digest: str, data: bytes) -> None:
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)


def test_blob_digest_mismatch_stops_and_removes_what_was_written(tmp_path: Path) -> None:
    """A blob whose bytes differ from its digest: exit 3, both digests named, no DEST left."""
    oci = OciLayout()
    desc = oci.image([BASE, UPDATE], compression="none")
    oci.tag(desc, "v1")
    layout = oci.write_dir(tmp_path / "layout")
    manifest = json.loads(oci.blobs[desc["digest"]])
    second = manifest["layers"][1]["digest"]
    forged = Layer().whiteout("etc/shadow").file("etc/os-release", b"v3\n").tar()
    forged = forged[: len(UPDATE)].ljust(len(UPDATE), b"\0")  # same size, other bytes
    _tamper(layout, second, forged)
    dest = tmp_path / "rootfs"
    proc = run("unpack", str(layout), str(dest))
    assert proc.returncode == 3
    (line,) = proc.stderr.splitlines()
    assert "layer 2/2" in line and "digest mismatch" in line
    assert second in line and sha256(forged) in line
    assert not dest.exists(), "a failed unpack must not look like a complete one"
    proc = run("unpack", "--no-verify", str(layout), str(dest))
    assert proc.returncode == 0, proc.stderr
    assert (dest / "etc" / "os-release").read_bytes() == b"v3\n"


def test_diff_id_mismatch_is_named(tmp_path: Path) -> None:
    """A config DiffID that is not the sha256 of the uncompressed tar: exit 3."""
    wrong = "sha256:" + "0" * 64
    oci = OciLayout()
    oci.tag(oci.image([BASE], config=config_doc([wrong])), "v1")
    dest = tmp_path / "rootfs"
    dest.mkdir()
    proc = run("unpack", str(oci.write_dir(tmp_path / "layout")), str(dest))
    assert proc.returncode == 3
    assert "DiffID mismatch" in proc.stderr and wrong in proc.stderr and sha256(BASE) in proc.stderr
    assert dest.is_dir() and not os.listdir(dest), "an empty DEST is left empty again"


def test_size_mismatch_is_named(tmp_path: Path) -> None:
    """A descriptor size that is not the blob's: exit 3 naming both sizes."""
    oci = OciLayout()
    data = gzip.compress(BASE, mtime=0)
    layer_desc = oci.blob(data, "application/vnd.oci.image.layer.v1.tar+gzip")
    layer_desc["size"] += 1
    config = oci.blob(
        json.dumps(config_doc([sha256(BASE)])).encode(), "application/vnd.oci.image.config.v1+json"
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer_desc],
    }
    oci.tag(oci.blob(json.dumps(manifest).encode(), manifest["mediaType"]), "v1")
    proc = run("unpack", str(oci.write_dir(tmp_path / "layout")), str(tmp_path / "rootfs"))
    assert proc.returncode == 3
    assert "size mismatch" in proc.stderr and str(len(data)) in proc.stderr


def test_legacy_docker_save_checks_the_diff_id(tmp_path: Path) -> None:
    """Legacy saves have no blob digests: the layer.tar must hash to its DiffID."""
    save = DockerSave()
    paths = save.image([BASE, UPDATE], repo_tags=["demo:v1"])
    save.files[paths[1]] = UPDATE[:-1024] + b"\1" + UPDATE[-1023:]
    proc = run("unpack", str(save.write(tmp_path / "save.tar")), str(tmp_path / "rootfs"))
    assert proc.returncode == 3
    assert "DiffID mismatch" in proc.stderr


# -- destination rules -----------------------------------------------------------------


def test_non_empty_dest_needs_force(tmp_path: Path) -> None:
    """unpack refuses a non-empty DEST (exit 1) unless --force, which updates it in place."""
    layout = oci_layout(tmp_path)
    dest = tmp_path / "rootfs"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    proc = run("unpack", str(layout), str(dest))
    assert proc.returncode == 1 and "--force" in proc.stderr
    assert tree(dest) == {"keep": b"mine"}
    proc = run("unpack", "--force", str(layout), str(dest))
    assert proc.returncode == 0, proc.stderr
    assert tree(dest) == {**EXPECTED, "keep": b"mine"}


def test_report_carries_the_image_and_verified_layers(tmp_path: Path) -> None:
    """--report names the chosen image and marks every layer verified."""
    layout = oci_layout(tmp_path)
    report = tmp_path / "report.json"
    proc = run("unpack", str(layout), str(tmp_path / "rootfs"), "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(report.read_text())
    assert doc["command"] == "unpack" and doc["image"]["format"] == "oci-layout"
    assert doc["image"]["ref"] == "v1" and doc["image"]["layers"] == 3
    assert [layer["verified"] for layer in doc["layers"]] == [True, True, True]
    assert doc["layers"][1]["whiteouts"] == 1
    assert doc["layers"][0]["diff_id"] == sha256(BASE)


def test_failed_report_records_the_error(tmp_path: Path) -> None:
    """On failure the report still says what failed and with which exit status."""
    oci = OciLayout()
    oci.tag(oci.image([BASE], config=config_doc(["sha256:" + "1" * 64])), "v1")
    report = tmp_path / "report.json"
    proc = run(
        "unpack",
        str(oci.write_dir(tmp_path / "layout")),
        str(tmp_path / "rootfs"),
        "--report",
        str(report),
    )
    assert proc.returncode == 3
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == 3 and "DiffID mismatch" in doc["error"]["message"]


@pytest.mark.parametrize(
    ("damage", "status"),
    [("missing-blob", 4), ("bad-json", 3), ("missing-index", 3)],
)
def test_bad_images_fail_in_one_line(tmp_path: Path, damage: str, status: int) -> None:
    """A broken layout gives one line, the documented status, and no DEST."""
    oci = OciLayout()
    desc = oci.image([BASE], compression="none")
    oci.tag(desc, "v1")
    layout = oci.write_dir(tmp_path / "layout")
    manifest = json.loads(oci.blobs[desc["digest"]])
    if damage == "missing-blob":
        os.unlink(layout / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1])
    elif damage == "bad-json":
        (layout / "index.json").write_text("{not json")
    else:
        os.unlink(layout / "index.json")
    proc = run("unpack", str(layout), str(tmp_path / "rootfs"))
    assert proc.returncode == status, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "rootfs").exists()


# -- inspect -------------------------------------------------------------------------------


def test_inspect_lists_layers_and_config(tmp_path: Path) -> None:
    """inspect prints every layer's digests and created_by, and a config summary; --json too."""
    layout = oci_layout(tmp_path)
    proc = run("inspect", str(layout))
    assert proc.returncode == 0, proc.stderr
    for tar in (BASE, UPDATE, APP):
        assert sha256(tar)[:19] in proc.stdout
    assert "step 2" in proc.stdout and "linux/amd64" in proc.stdout
    proc = run("inspect", "--json", str(layout))
    doc = json.loads(proc.stdout)
    assert [layer["diff_id"] for layer in doc["layers"]] == [sha256(t) for t in (BASE, UPDATE, APP)]
    assert [layer["created_by"] for layer in doc["layers"]] == ["step 0", "step 1", "step 2"]
    assert all(layer["digest"].startswith("sha256:") for layer in doc["layers"])


# -- made by real tools ----------------------------------------------------------------


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_docker_archive_and_oci_archive_unpack_alike(tmp_path: Path) -> None:
    """skopeo's docker-archive and oci-archive of one image unpack to the same tree."""
    layout = oci_layout(tmp_path)
    outputs = {}
    for transport, name in (("docker-archive", "docker.tar"), ("oci-archive", "oci.tar")):
        target = f"{transport}:{tmp_path / name}"
        target += ":demo:v1" if transport == "docker-archive" else ":v1"
        proc = subprocess.run(
            ["skopeo", "copy", "--quiet", f"oci:{layout}:v1", target],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        dest = tmp_path / f"rootfs-{transport}"
        proc = run("unpack", str(tmp_path / name), str(dest))
        assert proc.returncode == 0, proc.stderr
        outputs[transport] = tree(dest)
    assert outputs["docker-archive"] == outputs["oci-archive"] == EXPECTED


def test_digests_in_report_match_hashlib(tmp_path: Path) -> None:
    """The digest is the blob's sha256 and the DiffID the uncompressed tar's, never mixed up."""
    layout = oci_layout(tmp_path)
    report = tmp_path / "r.json"
    assert (
        run("unpack", str(layout), str(tmp_path / "rootfs"), "--report", str(report)).returncode
        == 0
    )
    doc = json.loads(report.read_text())
    for layer, tar in zip(doc["layers"], (BASE, UPDATE, APP), strict=True):
        blob = compress(tar, "gzip")
        assert layer["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()
        assert layer["diff_id"] == "sha256:" + hashlib.sha256(tar).hexdigest()
        assert layer["digest"] != layer["diff_id"]


# -- --atomic --------------------------------------------------------------------------


def _corrupt_layout(tmp_path: Path) -> Path:
    oci = OciLayout()
    oci.tag(
        oci.image([BASE, UPDATE], config=config_doc([sha256(BASE), "sha256:" + "2" * 64])), "v1"
    )
    return oci.write_dir(tmp_path / "bad-layout")


def test_atomic_failure_leaves_a_non_empty_dest_exactly_as_it_was(tmp_path: Path) -> None:
    """--atomic --force: a failed unpack changes nothing in DEST and leaves no sibling behind."""
    dest = tmp_path / "rootfs"
    dest.mkdir()
    (dest / "old").write_text("old tree")
    os.symlink("old", dest / "link")
    before = tree(dest)
    layout = _corrupt_layout(tmp_path)
    siblings = sorted(os.listdir(tmp_path))
    proc = run("unpack", "--atomic", "--force", str(layout), str(dest))
    assert proc.returncode == 3 and "DiffID mismatch" in proc.stderr
    assert tree(dest) == before
    assert sorted(os.listdir(tmp_path)) == siblings


@pytest.mark.parametrize("start", ["missing", "empty", "non-empty"])
def test_atomic_success_puts_the_whole_tree_in_place(tmp_path: Path, start: str) -> None:
    """--atomic replaces DEST (missing, empty, or non-empty with --force) by the new tree."""
    dest = tmp_path / "rootfs"
    if start != "missing":
        dest.mkdir()
    if start == "non-empty":
        (dest / "old").write_text("old tree")
    args = ["unpack", "--atomic", "--force", str(oci_layout(tmp_path)), str(dest)]
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    assert tree(dest) == EXPECTED
    assert f"-> {dest}" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["layout", "rootfs"]
