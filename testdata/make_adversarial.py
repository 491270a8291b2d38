"""Build the adversarial layer corpus in testdata/adversarial/ (deterministic).

    python testdata/make_adversarial.py          # (re)write the corpus
    python testdata/make_adversarial.py --check  # exit 1 if the files differ from a rebuild

Each case reproduces a published escape or a resource attack on unpackers:
hostile names, symlink and hardlink traversal, whiteout escapes, parents
replaced by symlinks mid-layer, corrupt or absurd header numbers, PAX records
with bad lengths, a sparse map claiming a terabyte, gzip and zstd bombs. The
layers target the usual host paths (``/etc/passwd``, ``../../etc/cron.d``):
tests/test_adversarial.py applies them inside a chroot whose "host" is a fake
one, so a broken engine would damage only that. ``cases.json`` lists every
case: its layer files, where the attack comes from, and the expected outcome
(the tree DEST must hold, or the ``ExtractorError`` subclass it must raise).

Compressed files are compared by their uncompressed bytes, so ``--check``
passes with any zlib or zstd build.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zstandard

# the checkout's own extractor, whether or not it is installed in this Python
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from extractor.paxwriter import pax_record

HERE = Path(__file__).resolve().parent / "adversarial"
MTIME = 1_600_000_000
EVIL = b"EVIL\n"
BOMB_SIZE = 1 << 30  # uncompressed bytes of zeros in each bomb


# -- tar building -------------------------------------------------------------------


class Tar:
    """A PAX tar built entry by entry, in order; raw 512-byte blocks can be spliced in."""

    def __init__(self, fmt: int = tarfile.PAX_FORMAT):
        self.fmt = fmt
        self.parts: list[tuple[tarfile.TarInfo | bytes, bytes | None]] = []

    def _info(self, name: str, kind: bytes, mode: int = 0o644) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = MTIME
        return info

    def file(self, name: str, data: bytes = EVIL, mode: int = 0o644) -> Tar:
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.parts.append((info, data))
        return self

    def dir(self, name: str, mode: int = 0o755) -> Tar:
        self.parts.append((self._info(name, tarfile.DIRTYPE, mode), None))
        return self

    def symlink(self, name: str, target: str) -> Tar:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.parts.append((info, None))
        return self

    def hardlink(self, name: str, target: str) -> Tar:
        info = self._info(name, tarfile.LNKTYPE)
        info.linkname = target
        self.parts.append((info, None))
        return self

    def pax(self, name: str, records: dict[str, str], data: bytes = EVIL) -> Tar:
        info = self._info(name, tarfile.REGTYPE)
        info.size = len(data)
        info.pax_headers = records
        self.parts.append((info, data))
        return self

    def raw(self, blocks: bytes) -> Tar:
        """Blocks written verbatim (a hand-made header and its data)."""
        assert len(blocks) % 512 == 0
        self.parts.append((blocks, None))
        return self

    def bytes(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=self.fmt, encoding="utf-8") as tf:
            for info, data in self.parts:
                if isinstance(info, bytes):
                    tf.fileobj.write(info)  # type: ignore[union-attr]
                    tf.offset += len(info)
                else:
                    tf.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def base256(value: int, width: int) -> bytes:
    """GNU base-256: high bit set, two's complement big-endian in the rest."""
    if value < 0:
        return b"\xff" + (value % (1 << (8 * (width - 1)))).to_bytes(width - 1, "big")
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def header(
    name: bytes,
    *,
    typeflag: bytes = b"0",
    size: bytes | None = None,
    mode: bytes | None = None,
    uid: bytes | None = None,
    gid: bytes | None = None,
    mtime: bytes | None = None,
    linkname: bytes = b"",
    extra: dict[int, bytes] | None = None,
) -> bytes:
    """One ustar header block with any field given raw; the checksum is made valid."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = mode or octal(0o644, 8)
    block[108:116] = uid or octal(0, 8)
    block[116:124] = gid or octal(0, 8)
    block[124:136] = size or octal(0, 12)
    block[136:148] = mtime or octal(MTIME, 12)
    block[156:157] = typeflag
    block[157 : 157 + len(linkname)] = linkname
    block[257:265] = b"ustar\x0000"
    for offset, value in (extra or {}).items():
        block[offset : offset + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def pax_block(records: bytes, name: bytes = b"PaxHeaders/x") -> bytes:
    """An ``x`` header with ``records`` as its payload, verbatim (lengths unchecked)."""
    pad = -len(records) % 512
    return header(name, typeflag=b"x", size=octal(len(records), 12)) + records + bytes(pad)


def rec(key: str, value: str) -> bytes:
    """One well-formed PAX record ``"%d key=value\\n"``."""
    return pax_record(key.encode(), value.encode())


def data_blocks(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def end() -> bytes:
    return bytes(1024)


# -- bombs ------------------------------------------------------------------------------


def zeros_tar_chunks(name: str, size: int) -> Iterator[bytes]:
    """A tar holding one file of ``size`` zero bytes, in 1 MiB pieces."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = MTIME
    info.uname = info.gname = ""
    yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    chunk = bytes(1 << 20)
    left = size
    while left:
        step = min(left, len(chunk))
        yield chunk[:step]
        left -= step
    yield bytes(-size % 512) + end()


def gzip_bomb() -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [comp.compress(c) for c in zeros_tar_chunks("zeros", BOMB_SIZE)]
    out.append(comp.flush())
    return b"".join(out)


def zstd_bomb() -> bytes:
    cctx = zstandard.ZstdCompressor(level=19)
    buf = io.BytesIO()
    with cctx.stream_writer(buf, closefd=False) as w:
        for c in zeros_tar_chunks("zeros", BOMB_SIZE):
            w.write(c)
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=19).compress(data)


# -- the cases ----------------------------------------------------------------------------

TB = 1 << 40


def ok(tree: dict[str, list[Any] | None]) -> dict[str, Any]:
    """Success, and DEST holds ``tree``: path -> [kind, content-or-target] or None (absent)."""
    return {"outcome": "ok", "tree": tree}


def err(name: str, words: tuple[str, ...] = ()) -> dict[str, Any]:
    """A clean ``ExtractorError`` of class ``name`` whose message holds ``words``."""
    return {"outcome": "error", "error": name, "words": list(words)}


def cases() -> list[dict[str, Any]]:
    """Every case: id, source, layers as (file name, bytes), expectation."""
    deep = "/".join(["d"] * 1000)
    sparse_tb = Tar().pax(
        "huge-sparse",
        {
            "GNU.sparse.major": "0",
            "GNU.sparse.minor": "1",
            "GNU.sparse.name": "huge-sparse",
            "GNU.sparse.realsize": str(TB),
            "GNU.sparse.map": f"{TB - len(EVIL)},{len(EVIL)}",
        },
    )
    sparse_huge = Tar().pax(
        "impossible-sparse",
        {
            "GNU.sparse.major": "0",
            "GNU.sparse.minor": "1",
            "GNU.sparse.name": "impossible-sparse",
            "GNU.sparse.realsize": str(1 << 70),
            "GNU.sparse.map": f"{(1 << 70) - 5},5",
        },
    )
    out: list[dict[str, Any]] = [
        {
            "id": "zip-slip-dotdot-name",
            "source": "Snyk zip-slip (2018); CVE-2026-28406",
            "layers": [("1.tar", Tar().file("../../etc/cron.d/evil").bytes())],
            "expect": ok({"etc/cron.d/evil": ["file", "EVIL\n"]}),
        },
        {
            "id": "absolute-name",
            "source": "GNU tar -P style absolute member names",
            "layers": [("1.tar", Tar().file("/etc/passwd").file("//root/.ssh/x").bytes())],
            "expect": ok({"etc/passwd": ["file", "EVIL\n"], "root/.ssh/x": ["file", "EVIL\n"]}),
        },
        {
            "id": "dotdot-mid-name",
            "source": "CVE-2007-4131 (GNU tar ../ in the middle of names)",
            "layers": [("1.tar", Tar().file("a/b/../../../../etc/shadow").bytes())],
            "expect": ok({"etc/shadow": ["file", "EVIL\n"], "a": None}),
        },
        {
            "id": "backslash-dotdot-is-a-name",
            "source": "Windows-style separators (CVE-2018-1002201 family)",
            "layers": [("1.tar", Tar().file("..\\..\\etc\\passwd").bytes())],
            "expect": ok({"..\\..\\etc\\passwd": ["file", "EVIL\n"]}),
        },
        {
            "id": "pax-path-dotdot",
            "source": "PAX path record overriding a harmless ustar name",
            "layers": [("1.tar", Tar().pax("harmless", {"path": "../../../etc/passwd"}).bytes())],
            "expect": ok({"etc/passwd": ["file", "EVIL\n"], "harmless": None}),
        },
        {
            "id": "global-pax-path",
            "source": "PAX global header (g) naming every later entry ../etc/passwd",
            "layers": [
                (
                    "1.tar",
                    Tar()
                    .raw(
                        header(b"g", typeflag=b"g", size=octal(25, 12))
                        + data_blocks(rec("path", "../../etc/passwd"))
                    )
                    .file("a", b"one\n")
                    .file("b", b"two\n")
                    .bytes(),
                )
            ],
            "expect": ok({"etc/passwd": ["file", "two\n"], "a": None, "b": None}),
        },
        {
            "id": "symlink-parent-absolute",
            "source": "CVE-2018-15664 / CVE-2019-14271 (symlink parent to /etc)",
            "layers": [
                ("1.tar", Tar().symlink("x", "/etc").bytes()),
                ("2.tar", Tar().file("x/passwd").file("x/cron.d/evil").bytes()),
            ],
            "expect": ok(
                {
                    "x": ["symlink", "/etc"],
                    "etc/passwd": ["file", "EVIL\n"],
                    "etc/cron.d/evil": ["file", "EVIL\n"],
                }
            ),
        },
        {
            "id": "symlink-parent-relative-same-layer",
            "source": "CVE-2025-45582 (GNU tar: link then write through it)",
            "layers": [("1.tar", Tar().symlink("x", "../../../etc").file("x/shadow").bytes())],
            "expect": ok({"x": ["symlink", "../../../etc"], "etc/shadow": ["file", "EVIL\n"]}),
        },
        {
            "id": "self-named-absolute-link-loops",
            "source": "etc -> /etc: in a chroot the link points at itself",
            "layers": [("1.tar", Tar().symlink("etc", "/etc").file("etc/passwd").bytes())],
            "expect": err("UnsafeEntryError", ("symbolic links",)),
        },
        {
            "id": "pax-linkpath-parent",
            "source": "PAX linkpath overriding a harmless ustar link name",
            "layers": [
                (
                    "1.tar",
                    Tar()
                    .raw(
                        pax_block(rec("linkpath", "../../../../../etc"))
                        + header(b"l", typeflag=b"2", linkname=b"harmless")
                    )
                    .file("l/passwd")
                    .bytes(),
                )
            ],
            "expect": ok(
                {"l": ["symlink", "../../../../../etc"], "etc/passwd": ["file", "EVIL\n"]}
            ),
        },
        {
            "id": "symlink-chain",
            "source": "CVE-2025-4517 (Python tarfile: chained links)",
            "layers": [
                (
                    "1.tar",
                    Tar()
                    .symlink("a", "b")
                    .symlink("b", "c/d")
                    .dir("c")
                    .symlink("c/d", "../../../../etc")
                    .file("a/cron.d/evil")
                    .bytes(),
                )
            ],
            "expect": ok({"a": ["symlink", "b"], "etc/cron.d/evil": ["file", "EVIL\n"]}),
        },
        {
            "id": "symlink-loop",
            "source": "loops: a -> b -> a",
            "layers": [("1.tar", Tar().symlink("a", "b").symlink("b", "a").file("a/x").bytes())],
            "expect": err("UnsafeEntryError", ("symbolic links",)),
        },
        {
            "id": "parent-replaced-by-symlink-mid-layer",
            "source": "CVE-2025-47290 (containerd: dir replaced by a symlink in one layer)",
            "layers": [
                (
                    "1.tar",
                    Tar()
                    .dir("d")
                    .file("d/a", b"a\n")
                    .symlink("d", "/etc")
                    .file("d/passwd")
                    .file("d/a", b"again\n")
                    .bytes(),
                )
            ],
            "expect": ok(
                {
                    "d": ["symlink", "/etc"],
                    "etc/passwd": ["file", "EVIL\n"],
                    "etc/a": ["file", "again\n"],
                }
            ),
        },
        {
            "id": "parent-replaced-by-symlink-next-layer",
            "source": "CVE-2025-47290 across layers",
            "layers": [
                ("1.tar", Tar().dir("d").file("d/a", b"a\n").bytes()),
                ("2.tar", Tar().symlink("d", "../../etc").file("d/passwd").bytes()),
            ],
            "expect": ok({"d": ["symlink", "../../etc"], "etc/passwd": ["file", "EVIL\n"]}),
        },
        {
            "id": "hardlink-dotdot-target",
            "source": "CVE-2021-20197 family: hardlink target ../../etc/shadow",
            "layers": [("1.tar", Tar().hardlink("h", "../../etc/shadow").bytes())],
            "expect": err("BadInputError", ("etc/shadow",)),
        },
        {
            "id": "hardlink-absolute-target-in-root",
            "source": "hardlink to /etc/passwd links the in-root copy",
            "layers": [
                ("1.tar", Tar().file("etc/passwd", b"inner\n").hardlink("h", "/etc/passwd").bytes())
            ],
            "expect": ok({"h": ["file", "inner\n"], "etc/passwd": ["file", "inner\n"]}),
        },
        {
            "id": "hardlink-through-symlink-parent",
            "source": "hardlink target under a symlink to the host /etc",
            "layers": [
                ("1.tar", Tar().symlink("x", "/etc").bytes()),
                ("2.tar", Tar().hardlink("h", "x/passwd").bytes()),
            ],
            "expect": err("BadInputError", ("x/passwd",)),
        },
        {
            "id": "hardlink-to-symlink-then-write",
            "source": "CVE-2021-32760 (containerd chmod through a hardlinked symlink)",
            "layers": [
                ("1.tar", Tar().symlink("l", "/etc/passwd").hardlink("h", "l").bytes()),
                ("2.tar", Tar().file("h", b"new\n", mode=0o4777).bytes()),
            ],
            "expect": ok({"l": ["symlink", "/etc/passwd"], "h": ["file", "new\n"], "etc": None}),
        },
        {
            "id": "whiteout-through-symlink",
            "source": "whiteout under a symlink parent (runc/umoci whiteout escapes)",
            "layers": [
                ("1.tar", Tar().symlink("d", "../../etc").bytes()),
                ("2.tar", Tar().file("d/.wh.passwd").file("d/.wh.cron.d").bytes()),
            ],
            "expect": ok({"d": ["symlink", "../../etc"]}),
        },
        {
            "id": "opaque-through-symlink",
            "source": "opaque marker under a symlink to /etc",
            "layers": [
                ("1.tar", Tar().symlink("d", "/etc").bytes()),
                ("2.tar", Tar().file("d/.wh..wh..opq", b"").bytes()),
            ],
            "expect": ok({"d": ["symlink", "/etc"], "etc": ["dir"]}),
        },
        {
            "id": "whiteout-dotdot-name",
            "source": "whiteout named ../.wh.etc climbs to the root only",
            "layers": [
                ("1.tar", Tar().file("etc/keep", b"k\n").bytes()),
                ("2.tar", Tar().file("../../.wh.etc", b"").bytes()),
            ],
            "expect": ok({"etc": None}),
        },
        {
            "id": "malformed-whiteout-dotdot",
            "source": "`.wh..` would whiteout the parent",
            "layers": [
                ("1.tar", Tar().file("etc/keep", b"k\n").bytes()),
                ("2.tar", Tar().file("etc/.wh..", b"").bytes()),
            ],
            "expect": err("UnsafeEntryError", ("whiteout",)),
        },
        {
            "id": "root-entry-symlink",
            "source": "CVE-2021-29136 (umoci: ./ as a symlink to the host)",
            "layers": [("1.tar", Tar().symlink(".", "/etc").file("passwd").bytes())],
            "expect": err("UnsafeEntryError", ("root",)),
        },
        {
            "id": "deep-path-1000",
            "source": "names past PATH_MAX (1000 components)",
            "layers": [("1.tar.gz", gz(Tar().file(deep + "/leaf").bytes()))],
            "expect": ok({deep + "/leaf": ["file", "EVIL\n"]}),
        },
        {
            "id": "size-octal-8gib-no-data",
            "source": "size field 077777777777 with no data behind it",
            "layers": [("1.tar", header(b"big", size=b"77777777777\0") + end())],
            "expect": err("BadInputError", ("truncated",)),
        },
        {
            "id": "size-base256-exabyte",
            "source": "GNU base-256 size of 2**60",
            "layers": [("1.tar", header(b"big", size=base256(1 << 60, 12)) + end())],
            "expect": err("BadInputError", ("truncated",)),
        },
        {
            "id": "size-base256-negative",
            "source": "GNU base-256 negative size",
            "layers": [("1.tar", header(b"neg", size=base256(-512, 12)) + end())],
            "expect": err("BadInputError", ("negative",)),
        },
        {
            "id": "size-octal-garbage",
            "source": "size field holding non-octal garbage",
            "layers": [("1.tar", header(b"bad", size=b"9Z9Z9Z9Z9Z9\0") + end())],
            "expect": err("BadInputError", ("size",)),
        },
        {
            "id": "uid-base256-huge",
            "source": "GNU base-256 uid of 2**55 (does not fit uid_t)",
            "layers": [("1.tar", header(b"f", uid=base256(1 << 55, 8)) + end())],
            "expect": err("BadInputError", ("uid",)),
        },
        {
            "id": "mtime-base256-huge",
            "source": "GNU base-256 mtime of 2**80 seconds",
            "layers": [("1.tar", header(b"f", mtime=base256(1 << 80, 12)) + end())],
            "expect": err("BadInputError", ("time",)),
        },
        {
            "id": "mode-base256-garbage",
            "source": "GNU base-256 mode with every bit set",
            "layers": [("1.tar", header(b"f", mode=b"\x80" + b"\xff" * 7) + end())],
            "expect": ok({"f": ["file", ""]}),
        },
        {
            "id": "pax-length-too-long",
            "source": "PAX record length past the end of the header data",
            "layers": [("1.tar", pax_block(b"99 path=evil\n") + header(b"f") + end())],
            "expect": err("BadInputError", ("PAX",)),
        },
        {
            "id": "pax-length-zero",
            "source": "PAX record length 0 (an infinite loop in naive parsers)",
            "layers": [("1.tar", pax_block(b"0 path=evil\n") + header(b"f") + end())],
            "expect": err("BadInputError", ("PAX",)),
        },
        {
            "id": "pax-length-short",
            "source": "PAX record length inside its own key",
            "layers": [("1.tar", pax_block(b"3 path=evil\n") + header(b"f") + end())],
            "expect": err("BadInputError", ("PAX",)),
        },
        {
            "id": "pax-length-not-digits",
            "source": "PAX record length with a sign",
            "layers": [("1.tar", pax_block(b"-12 path=x\n") + header(b"f") + end())],
            "expect": err("BadInputError", ("PAX",)),
        },
        {
            "id": "pax-size-huge",
            "source": "PAX size record of 10**30",
            "layers": [("1.tar", pax_block(rec("size", str(10**30))) + header(b"f") + end())],
            "expect": err("BadInputError", ("size",)),
        },
        {
            "id": "pax-header-claims-gigabyte",
            "source": "a PAX header whose own size is 1 GiB (memory exhaustion)",
            "layers": [("1.tar", header(b"x", typeflag=b"x", size=octal(1 << 30, 12)) + end())],
            "expect": err("BadInputError", ("PAX",)),
        },
        {
            "id": "gnu-longname-dotdot",
            "source": "GNU long name (L) climbing out",
            "layers": [
                (
                    "1.tar",
                    Tar(tarfile.GNU_FORMAT).file("../" * 60 + "etc/cron.d/" + "e" * 60).bytes(),
                )
            ],
            "expect": ok({"etc/cron.d/" + "e" * 60: ["file", "EVIL\n"]}),
        },
        {
            "id": "sparse-claims-a-terabyte",
            "source": "PAX 0.1 sparse map: 5 bytes at the end of a 1 TiB file",
            "layers": [("1.tar", sparse_tb.bytes())],
            "expect": ok({"huge-sparse": ["sparse", TB]}),
        },
        {
            "id": "sparse-claims-2-pow-70",
            "source": "PAX sparse realsize larger than any file system allows",
            "layers": [("1.tar", sparse_huge.bytes())],
            "expect": err("BadInputError", ("sparse",)),
        },
        {
            "id": "control-characters-in-a-bad-entry-name",
            "source": "log/terminal injection: a newline and an ANSI escape in a refused name",
            "layers": [("1.tar", header(b"evil\n\x1b[31mred", typeflag=b"Z") + end())],
            "expect": err("BadInputError", ("unsupported",)),
        },
        {
            "id": "gzip-bomb-1gib",
            "source": "decompression bomb: 1 GiB of zeros in ~1 MiB of gzip",
            "layers": [("1.tar.gz", gzip_bomb())],
            "expect": ok({"zeros": ["zeros", BOMB_SIZE]}),
        },
        {
            "id": "zstd-bomb-1gib",
            "source": "decompression bomb: 1 GiB of zeros in ~32 KiB of zstd",
            "layers": [("1.tar.zst", zstd_bomb())],
            "expect": ok({"zeros": ["zeros", BOMB_SIZE]}),
        },
        {
            "id": "zstd-symlink-escape",
            "source": "the symlink-parent escape inside a zstd layer",
            "layers": [
                (
                    "1.tar.zst",
                    zst(Tar().symlink("x", "../../root").file("x/.ssh/authorized_keys").bytes()),
                )
            ],
            "expect": ok(
                {"x": ["symlink", "../../root"], "root/.ssh/authorized_keys": ["file", "EVIL\n"]}
            ),
        },
    ]
    return out


# -- writing and checking ---------------------------------------------------------------


def _digest(name: str, data: bytes) -> str:
    """sha256 of a layer file's uncompressed bytes (what --check compares), streamed."""
    reader: Any = io.BytesIO(data)
    if name.endswith(".gz"):
        reader = gzip.GzipFile(fileobj=reader)
    elif name.endswith(".zst"):
        reader = zstandard.ZstdDecompressor().stream_reader(reader)
    sha = hashlib.sha256()
    while chunk := reader.read(1 << 20):
        sha.update(chunk)
    return sha.hexdigest()


def index(all_cases: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "about": "Adversarial layers; see testdata/make_adversarial.py. Paths are relative "
        "to this directory; 'tree' maps DEST paths to [kind, content] or null (absent).",
        "cases": [
            {
                "id": c["id"],
                "source": c["source"],
                "layers": [f"{c['id']}/{name}" for name, _ in c["layers"]],
                "expect": c["expect"],
            }
            for c in all_cases
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, don't write")
    args = parser.parse_args(argv)
    all_cases = cases()
    doc = json.dumps(index(all_cases), indent=1, sort_keys=True) + "\n"
    if args.check:
        bad = []
        if (HERE / "cases.json").read_text() != doc:
            bad.append("cases.json")
        for c in all_cases:
            for name, data in c["layers"]:
                path = HERE / c["id"] / name
                if not path.exists() or _digest(name, path.read_bytes()) != _digest(name, data):
                    bad.append(str(path.relative_to(HERE)))
        expected = {f"{c['id']}/{n}" for c in all_cases for n, _ in c["layers"]}
        present = {
            str(p.relative_to(HERE)) for p in HERE.rglob("*") if p.is_file() and p.parent != HERE
        }
        bad.extend(sorted(present - expected))
        if bad:
            print("out of date:", *bad, sep="\n  ")
            return 1
        print(f"{len(all_cases)} cases up to date")
        return 0
    HERE.mkdir(exist_ok=True)
    for c in all_cases:
        (HERE / c["id"]).mkdir(exist_ok=True)
        for name, data in c["layers"]:
            (HERE / c["id"] / name).write_bytes(data)
    (HERE / "cases.json").write_text(doc)
    print(f"wrote {len(all_cases)} cases to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
