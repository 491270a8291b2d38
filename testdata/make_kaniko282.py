"""Regenerate testdata/kaniko282/: the image of kaniko issue #282, built here, not downloaded.

The original (vito/broken-base, 2018) was alpine plus git, then

    RUN rm /usr/bin/git && ln -s /usr/libexec/git-core/git /usr/bin/git

In the lower layer usr/bin/git and usr/libexec/git-core/git are one file with
two names (a hardlink). The upper layer holds what docker's diff records for
that RUN line: the changed parent directories and the new symlink, with no
whiteout, because the symlink takes the file's name. Oldest first the
symlink leads to the git binary; newest first the hardlink is made to the
symlink, which then points at itself.

    1-alpine-git.tar    an alpine-like base with git (a runnable #!/bin/sh script)
    2-git-symlink.tar   usr/, usr/bin/ and the symlink usr/bin/git
    oci/                the same two layers as an OCI image layout, ref kaniko282:latest

Everything is reproducible (fixed mtimes, fixed entry order, uncompressed
layers, JSON with sorted keys), so `python testdata/make_kaniko282.py --check`
proves the committed files are what this script makes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tarspec import Spec, spec_tar

# the checkout's own extractor, whether or not it is installed in this Python
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from extractor.imagewrite import (
    OCI_LAYER,
    blob_files,
    canonical_json,
    descriptor,
    digest_of,
    oci_layout_files,
)

HERE = Path(__file__).resolve().parent / "kaniko282"
BASE_TIME = 1_533_772_800  # 2018-08-09, the day the issue was filed
UPPER_TIME = BASE_TIME + 3600
GIT = b"#!/bin/sh\necho 'git version 2.18.0 (kaniko #282 reproduction)'\n"
REF = "kaniko282:latest"


def _tar(entries: list[Spec], mtime: int) -> bytes:
    return spec_tar(entries, mtime, go_style=True)


def layers() -> dict[str, bytes]:
    """The two layer tarballs, by file name."""
    base: list[Spec] = [
        ("dir", "bin", None, 0o755),
        ("dir", "dev", None, 0o755),
        ("dir", "etc", None, 0o755),
        ("file", "etc/alpine-release", b"3.8.0\n", 0o644),
        ("file", "etc/group", b"root:x:0:root\n", 0o644),
        (
            "file",
            "etc/os-release",
            b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.8.0\n'
            b'PRETTY_NAME="Alpine Linux v3.8 (kaniko #282 reproduction)"\n',
            0o644,
        ),
        ("file", "etc/passwd", b"root:x:0:0:root:/root:/bin/ash\n", 0o644),
        ("dir", "home", None, 0o755),
        ("dir", "lib", None, 0o755),
        ("dir", "root", None, 0o700),
        ("dir", "sbin", None, 0o755),
        ("dir", "tmp", None, 0o1777),
        ("dir", "usr", None, 0o755),
        ("dir", "usr/bin", None, 0o755),
        ("file", "usr/bin/git", GIT, 0o755),
        ("dir", "usr/libexec", None, 0o755),
        ("dir", "usr/libexec/git-core", None, 0o755),
        ("hardlink", "usr/libexec/git-core/git", "usr/bin/git", 0o755),
        ("dir", "var", None, 0o755),
    ]
    upper: list[Spec] = [
        ("dir", "usr", None, 0o755),
        ("dir", "usr/bin", None, 0o755),
        ("symlink", "usr/bin/git", "/usr/libexec/git-core/git", 0o777),
    ]
    return {
        "1-alpine-git.tar": _tar(base, BASE_TIME),
        "2-git-symlink.tar": _tar(upper, UPPER_TIME),
    }


def _json(doc: object) -> bytes:
    # the committed files end in a newline, unlike imagewrite's default documents
    return canonical_json(doc) + b"\n"


def oci_layout(tars: list[bytes]) -> dict[str, bytes]:
    """The OCI image layout's files, by path relative to oci/."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2018-08-09T01:00:00Z",
        "config": {
            "Cmd": ["/usr/bin/git", "--version"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [digest_of(t) for t in tars]},
        "history": [
            {
                "created": "2018-08-09T00:00:00Z",
                "created_by": "/bin/sh -c apk add --no-cache git",
            },
            {
                "created": "2018-08-09T01:00:00Z",
                "created_by": "/bin/sh -c rm /usr/bin/git && "
                "ln -s /usr/libexec/git-core/git /usr/bin/git",
            },
        ],
    }
    descs = [descriptor(OCI_LAYER, t) for t in tars]
    platform = {"architecture": "amd64", "os": "linux"}
    small = oci_layout_files(descs, config, REF, dump=_json, platform=platform)
    return {**blob_files(tars), **small}


def everything() -> dict[str, bytes]:
    """Every file under testdata/kaniko282/, by relative path."""
    tars = layers()
    files = dict(tars)
    files.update({f"oci/{k}": v for k, v in oci_layout(list(tars.values())).items()})
    return files


def main() -> int:
    check = "--check" in sys.argv[1:]
    files = everything()
    present = {str(p.relative_to(HERE)) for p in HERE.rglob("*") if p.is_file()}
    stale = sorted(present - set(files))
    for name, data in sorted(files.items()):
        path = HERE / name
        if check:
            if not path.is_file() or path.read_bytes() != data:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    if check and stale:
        print("stale:", ", ".join(stale), "(run python testdata/make_kaniko282.py)")
        return 1
    for name in stale if not check else []:
        (HERE / name).unlink()  # a blob this script no longer makes
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
