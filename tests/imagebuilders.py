"""Build whole images for the image-reader tests: OCI layouts, docker saves, archives.

Everything is deterministic (fixed mtimes, gzip mtime 0, members in the order
given), so a fixture built twice has the same bytes and the same digests:

    oci = OciLayout()
    desc = oci.image([Layer().file("a", b"x").tar()], compression="gzip")
    oci.tag(desc, "v1")
    oci.write_dir(tmp_path / "layout")          # or oci.write_tar(path, "zstd")

``DockerSave`` writes the legacy form (``<id>/layer.tar``, repeated layers as
symlinks or hardlink members, as docker ≤ 24 did); ``docker25`` the form with
an OCI layout and a ``manifest.json`` pointing at its blobs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

MTIME = 1_600_000_000

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
EMPTY_TAR_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


def sha256(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compress(data: bytes, compression: str) -> bytes:
    """``data`` compressed with ``none``, ``gzip`` or ``zstd`` (reproducibly)."""
    if compression == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(data)
    return data


def to_json(doc: object) -> bytes:
    """Stable JSON bytes."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# A member of an outer archive: (name, bytes) for a file, or (name, ("symlink"|"hardlink", target)).
TarMember = tuple[str, bytes | tuple[str, str]]


def tar_bytes(members: list[TarMember]) -> bytes:
    """An uncompressed tar of ``members`` in the given order (directories implied)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        seen: set[str] = set()
        for name, content in members:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in seen:
                    seen.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
                    tf.addfile(info)
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = MTIME, 0o644
            if isinstance(content, bytes):
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
            else:
                kind, target = content
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = target
                tf.addfile(info)
    return buf.getvalue()


def write_tar(path: Path, members: list[TarMember], compression: str = "none") -> Path:
    """Write ``members`` as a tar file, optionally compressed as a whole."""
    path.write_bytes(compress(tar_bytes(members), compression))
    return path


def config_doc(
    diff_ids: list[str],
    history: list[dict[str, Any]] | None = None,
    os_name: str = "linux",
    arch: str = "amd64",
    variant: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """An image config with ``rootfs.diff_ids`` and a run config."""
    doc: dict[str, Any] = {
        "architecture": arch,
        "os": os_name,
        "created": "2024-01-02T03:04:05Z",
        "config": {
            "Entrypoint": ["/bin/sh"],
            "Cmd": ["-c", "true"],
            "Env": ["PATH=/usr/bin:/bin"],
            "WorkingDir": "/srv",
            "User": "1000:1000",
            "Labels": {"org.example": "yes"},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history
        if history is not None
        else [{"created_by": f"step {i}"} for i in range(len(diff_ids))],
    }
    if variant:
        doc["variant"] = variant
    doc.update(extra)
    return doc


@dataclass
class OciLayout:
    """An OCI image layout being built: blobs plus the top-level ``index.json`` entries."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    layout_version: str = "1.0.0"

    def blob(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        """Store ``data``; return its descriptor."""
        digest = sha256(data)
        self.blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def image(
        self,
        layers: list[bytes],
        compression: str | list[str] = "gzip",
        config: dict[str, Any] | None = None,
        platform: dict[str, str] | None = None,
        layer_types: list[str] | None = None,
    ) -> dict[str, Any]:
        """Add an image (uncompressed layer tars) and return its manifest descriptor."""
        comps = compression if isinstance(compression, list) else [compression] * len(layers)
        descs = []
        for i, tar in enumerate(layers):
            media = layer_types[i] if layer_types else LAYER_TYPES[comps[i]]
            descs.append(self.blob(compress(tar, comps[i]), media))
        if config is None:
            plat = platform or {}
            config = config_doc(
                [sha256(t) for t in layers],
                os_name=plat.get("os", "linux"),
                arch=plat.get("architecture", "amd64"),
                variant=plat.get("variant", ""),
            )
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.blob(to_json(config), OCI_CONFIG),
            "layers": descs,
        }
        desc = self.blob(to_json(manifest), OCI_MANIFEST)
        if platform is not None:
            desc["platform"] = platform
        return desc

    def index(self, descs: list[dict[str, Any]]) -> dict[str, Any]:
        """A nested index over ``descs``; returns its descriptor."""
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs}
        return self.blob(to_json(doc), OCI_INDEX)

    def tag(self, desc: dict[str, Any], ref: str | None = None, **annotations: str) -> None:
        """List ``desc`` in ``index.json`` named ``ref`` (``org.opencontainers.image.ref.name``)."""
        entry = dict(desc)
        notes = dict(annotations)
        if ref is not None:
            notes["org.opencontainers.image.ref.name"] = ref
        if notes:
            entry["annotations"] = {**entry.get("annotations", {}), **notes}
        self.entries.append(entry)

    def members(self, skip: frozenset[str] = frozenset()) -> list[TarMember]:
        """The layout as archive members (blobs sorted, then the two top files)."""
        out: list[TarMember] = []
        for digest in sorted(self.blobs):
            if digest not in skip:
                out.append((f"blobs/sha256/{digest.split(':')[1]}", self.blobs[digest]))
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.entries}
        out.append(("index.json", to_json(index)))
        out.append(("oci-layout", to_json({"imageLayoutVersion": self.layout_version})))
        return out

    def write_dir(self, path: Path, skip: frozenset[str] = frozenset()) -> Path:
        """Write the layout as a directory (blobs in ``skip`` left out)."""
        for name, content in self.members(skip):
            target = path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            assert isinstance(content, bytes)
            target.write_bytes(content)
        return path

    def write_tar(self, path: Path, compression: str = "none") -> Path:
        """Write the layout as an OCI archive."""
        return write_tar(path, self.members(), compression)


def v1_id(seed: str) -> str:
    """A docker v1 layer id (64 hex) derived from ``seed``."""
    return hashlib.sha256(seed.encode()).hexdigest()


@dataclass
class DockerSave:
    """A legacy ``docker save`` archive (docker ≤ 24) being built.

    ``image`` adds one image; a layer tar repeated (same DiffID) is written
    once and the repeat becomes a ``link`` ("symlink" as docker writes it,
    or "hardlink" member) to the first one's ``layer.tar``.
    """

    files: dict[str, bytes | tuple[str, str]] = field(default_factory=dict)
    manifest: list[dict[str, Any]] = field(default_factory=list)
    repositories: dict[str, dict[str, str]] = field(default_factory=dict)

    def image(
        self,
        layers: list[bytes],
        repo_tags: list[str] | None = None,
        config: dict[str, Any] | None = None,
        link: str = "symlink",
    ) -> list[str]:
        """Add an image; return the layer paths as ``manifest.json`` lists them."""
        config = config or config_doc([sha256(t) for t in layers])
        config_bytes = to_json(config)
        config_name = f"{sha256(config_bytes).split(':')[1]}.json"
        self.files[config_name] = config_bytes
        paths: list[str] = []
        first_of: dict[str, str] = {}
        parent = ""
        for i, tar in enumerate(layers):
            layer_id = v1_id(f"{parent}/{i}/{sha256(tar)}")
            path = f"{layer_id}/layer.tar"
            diff_id = sha256(tar)
            if diff_id in first_of and link == "symlink":
                self.files[path] = ("symlink", f"../{first_of[diff_id]}")
            elif diff_id in first_of and link == "hardlink":
                self.files[path] = ("hardlink", first_of[diff_id])
            else:
                self.files[path] = tar
                first_of[diff_id] = path
            self.files[f"{layer_id}/VERSION"] = b"1.0"
            self.files[f"{layer_id}/json"] = to_json({"id": layer_id, "parent": parent})
            parent = layer_id
            paths.append(path)
        self.manifest.append({"Config": config_name, "RepoTags": repo_tags, "Layers": paths})
        for tag in repo_tags or []:
            repo, _, version = tag.rpartition(":")
            self.repositories.setdefault(repo, {})[version] = parent
        return paths

    def members(self) -> list[TarMember]:
        """Members sorted by name, as docker's tar of its temp directory is; links last-safe."""
        items = sorted(self.files.items())
        # A hardlink member must follow its target in the tar.
        regular = [(n, c) for n, c in items if not (isinstance(c, tuple) and c[0] == "hardlink")]
        hard = [(n, c) for n, c in items if isinstance(c, tuple) and c[0] == "hardlink"]
        out: list[TarMember] = [*regular, *hard]
        out.append(("manifest.json", to_json(self.manifest)))
        out.append(("repositories", to_json(self.repositories)))
        return out

    def write(self, path: Path, compression: str = "none") -> Path:
        """Write the archive, optionally compressed as a whole."""
        return write_tar(path, self.members(), compression)


def docker25(
    path: Path,
    images: list[tuple[list[bytes], list[str]]],
    compression: str = "none",
    manifest_layers: dict[int, list[str]] | None = None,
    oci_layers_empty: bool = False,
    index_null: bool = False,
) -> Path:
    """A docker 25+ save: an OCI layout (uncompressed layers) plus manifest.json and repositories.

    ``images`` is a list of (layer tars, RepoTags). ``oci_layers_empty``
    reproduces moby#47065 (OCI manifests with ``"layers": []``) and
    ``index_null`` moby#47210 (``"manifests": null``).
    """
    oci = OciLayout()
    manifest_json = []
    for tars, tags in images:
        desc = oci.image(tars, compression="none")
        manifest = json.loads(oci.blobs[desc["digest"]])
        if oci_layers_empty:
            manifest["layers"] = []
            del oci.blobs[desc["digest"]]
            desc = oci.blob(to_json(manifest), OCI_MANIFEST)
        for tag in tags:
            name = tag if "/" in tag.split(":")[0] else f"docker.io/library/{tag}"
            oci.tag(desc, tag.rpartition(":")[2], **{"io.containerd.image.name": name})
        layers = [f"blobs/sha256/{sha256(t).split(':')[1]}" for t in tars]
        manifest_json.append(
            {
                "Config": f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}",
                "RepoTags": tags,
                "Layers": layers,
            }
        )
    for i, layers in (manifest_layers or {}).items():
        manifest_json[i]["Layers"] = layers
    members = oci.members()
    if index_null:
        members = [
            (n, to_json({"schemaVersion": 2, "manifests": None})) if n == "index.json" else (n, c)
            for n, c in members
        ]
    members.append(("manifest.json", to_json(manifest_json)))
    members.append(("repositories", to_json({})))
    return write_tar(path, members, compression)


def read_all(f: io.BufferedIOBase | Any, chunk: int = 1 << 20) -> bytes:
    """Read a stream to its end in bounded chunks."""
    parts = []
    while True:
        data = f.read(chunk)
        if not data:
            return b"".join(parts)
        parts.append(data)


def rchar() -> int:
    """Bytes this process has read through read(2) so far (``/proc/self/io``)."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def proc_io_available() -> bool:
    """Whether ``rchar`` can be measured here."""
    return os.path.exists("/proc/self/io")
