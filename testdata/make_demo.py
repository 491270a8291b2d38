"""Regenerate testdata/demo/: a three-layer stack that `make demo` applies.

The bytes are reproducible (fixed mtimes, gzip mtime 0, entries in a fixed
order), so `python testdata/make_demo.py --check` can prove the committed
files are what this script makes.

1-base.tar.gz    a small usrmerge-style base: /bin -> usr/bin, git and its
                 hardlink in git-core (the kaniko #282 pair), /tmp with the sticky bit
2-update.tar.zst whiteouts a file, makes apt's cache opaque, turns /usr/bin/git
                 into a symlink to the git-core hardlink, turns a directory into a file
3-app.tar        plain tar: an app with a hardlink to a file from layer 1

`python testdata/make_demo.py --oci DIR` writes the same stack as an OCI
image layout (tag `demo`) for `extractor unpack` and `inspect`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

import zstandard
from tarspec import spec_tar

HERE = Path(__file__).resolve().parent / "demo"
MTIME = 1_700_000_000


def _tar(entries: list[tuple[str, str, object, int]]) -> bytes:
    return spec_tar(entries, MTIME)


def layers() -> dict[str, bytes]:
    base = _tar(
        [
            ("dir", "etc", None, 0o755),
            ("file", "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
            ("file", "etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640),
            ("dir", "usr", None, 0o755),
            ("dir", "usr/bin", None, 0o755),
            ("symlink", "bin", "usr/bin", 0o777),
            ("file", "usr/bin/git", b"#!/bin/sh\necho 'git version 2.0 (demo)'\n", 0o755),
            ("dir", "usr/libexec", None, 0o755),
            ("dir", "usr/libexec/git-core", None, 0o755),
            ("hardlink", "usr/libexec/git-core/git", "usr/bin/git", 0o755),
            ("dir", "usr/share", None, 0o755),
            ("dir", "usr/share/doc", None, 0o755),
            ("file", "usr/share/doc/README", b"base docs\n", 0o644),
            ("dir", "var", None, 0o755),
            ("dir", "var/cache", None, 0o755),
            ("dir", "var/cache/apt", None, 0o755),
            ("file", "var/cache/apt/pkgcache.bin", b"old cache\n", 0o644),
            ("dir", "tmp", None, 0o1777),
        ]
    )
    update = _tar(
        [
            ("dir", "etc", None, 0o755),
            ("file", "etc/.wh.shadow", b"", 0o644),
            ("file", "etc/os-release", b"NAME=demo\n", 0o644),
            ("dir", "var/cache/apt", None, 0o755),
            ("file", "var/cache/apt/.wh..wh..opq", b"", 0o644),
            ("file", "var/cache/apt/srcpkgcache.bin", b"new cache\n", 0o644),
            ("symlink", "usr/bin/git", "/usr/libexec/git-core/git", 0o777),
            ("file", "usr/share/doc", b"docs were removed from this image\n", 0o644),
        ]
    )
    app = _tar(
        [
            ("dir", "app", None, 0o755),
            ("file", "app/run.sh", b"#!/bin/sh\nexec git --version\n", 0o755),
            ("hardlink", "app/passwd.orig", "etc/passwd", 0o644),
        ]
    )
    return {
        "1-base.tar.gz": gzip.compress(base, mtime=0),
        "2-update.tar.zst": zstandard.ZstdCompressor(level=3).compress(update),
        "3-app.tar": app,
    }


MEDIA = {
    ".gz": "application/vnd.oci.image.layer.v1.tar+gzip",
    ".zst": "application/vnd.oci.image.layer.v1.tar+zstd",
    ".tar": "application/vnd.oci.image.layer.v1.tar",
}


def _blob(blobs: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _json(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_oci(layout: Path) -> None:
    """The demo stack as an OCI image layout tagged ``demo``, byte for byte reproducible."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    stack = layers()
    descriptors, diff_ids = [], []
    for name, data in stack.items():
        descriptors.append({"mediaType": MEDIA[Path(name).suffix], **_blob(blobs, data)})
        raw = gzip.decompress(data) if name.endswith(".gz") else data
        if name.endswith(".zst"):
            raw = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Entrypoint": ["/app/run.sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"demo layer {name}"} for name in stack],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(blobs, _json(config)),
        },
        "layers": descriptors,
    }
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **_blob(blobs, _json(manifest)),
                "annotations": {"org.opencontainers.image.ref.name": "demo"},
            }
        ],
    }
    (layout / "index.json").write_bytes(_json(index))
    (layout / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))


def main() -> int:
    if sys.argv[1:2] == ["--oci"] and len(sys.argv) == 3:
        write_oci(Path(sys.argv[2]))
        return 0
    check = "--check" in sys.argv[1:]
    HERE.mkdir(exist_ok=True)
    stale = []
    for name, data in layers().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(name)
        else:
            path.write_bytes(data)
    if stale:
        print("stale:", ", ".join(stale), "(run python testdata/make_demo.py)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
