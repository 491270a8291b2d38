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
import sys
from pathlib import Path

import zstandard
from tarspec import spec_tar

# the checkout's own extractor, whether or not it is installed in this Python
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from extractor.imagewrite import (
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    blob_files,
    descriptor,
    digest_of,
    oci_layout_files,
    write_files,
)

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


MEDIA = {".gz": OCI_LAYER_GZIP, ".zst": OCI_LAYER_ZSTD, ".tar": OCI_LAYER}


def _tar_of(name: str, data: bytes) -> bytes:
    """The uncompressed tar of the layer file ``name``, whose sha256 is its diff_id."""
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def write_oci(layout: Path) -> None:
    """The demo stack as an OCI image layout tagged ``demo``, byte for byte reproducible."""
    stack = layers()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Entrypoint": ["/app/run.sh"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": [digest_of(_tar_of(n, d)) for n, d in stack.items()],
        },
        "history": [{"created_by": f"demo layer {name}"} for name in stack],
    }
    descs = [descriptor(MEDIA[Path(name).suffix], data) for name, data in stack.items()]
    files = {**blob_files(stack.values()), **oci_layout_files(descs, config, "demo")}
    write_files(layout, files)


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
