"""``extractor export``: a flattened rootfs tar whose bytes depend only on the tree.

Trees are made by applying layers (tests/builders.py) onto tmpfs directories, so
the same tests run as root and, with owners read back from the rootless xattr,
as any user. Archives are read back three ways: tarfile, GNU tar, and a raw
header walk that checks every byte we promise (empty uname/gname, pax records).
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from builders import MTIME, Layer
from conftest import AS_NOBODY, IS_ROOT, NOBODY, snapshot
from imagebuilders import DockerSave, OciLayout

from extractor import ApplyOptions, BadInputError, apply_layers
from extractor.export import ExportOptions, export_tree, parse_rootless_owner
from extractor.paxwriter import BLOCK, RECORD, TarWriter, pax_record
from extractor.treediff import diff_trees
from extractor.xattrs import rootless_owner_record

MODULE = [sys.executable, "-m", "extractor"]
SDE = MTIME + 1000
OWNER_XATTR = "user.rootlesscontainers"


def apply(dest: Path, *layers: Layer) -> Path:
    """Apply ``layers`` onto ``dest`` (made 0755 first, so the root's mode is known)."""
    dest.mkdir(mode=0o755)
    os.chmod(dest, 0o755)
    apply_layers(dest, [io.BytesIO(layer.tar()) for layer in layers], ApplyOptions())
    return dest


def export_bytes(root: Path, epoch: int | None = SDE, rootless: bool = False) -> bytes:
    """The export of ``root`` as bytes."""
    buf = io.BytesIO()
    export_tree(root, buf, ExportOptions(source_date_epoch=epoch, rootless=rootless))
    return buf.getvalue()


def run(*args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """``python -m extractor ARGS``; no Traceback allowed."""
    proc = subprocess.run([*MODULE, *args], capture_output=True, timeout=60, **kw)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    return proc


Member = tuple[str, bytes, int, int, int, int, int, str, dict[str, bytes]]


def members(data: bytes) -> list[Member]:
    """(name, type, mode, uid, gid, size, mtime, linkname, xattrs) of every member, by tarfile."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tf:
        for m in tf:
            xattrs = {
                k[len("SCHILY.xattr.") :]: v.encode("utf-8", "surrogateescape")
                for k, v in m.pax_headers.items()
                if k.startswith("SCHILY.xattr.")
            }
            name = m.name[2:] if m.name.startswith("./") else m.name
            out.append(
                (name, m.type, m.mode, m.uid, m.gid, m.size, int(m.mtime), m.linkname, xattrs)
            )
    return out


def raw_headers(data: bytes) -> list[tuple[bytes, bytes, list[tuple[bytes, bytes]]]]:
    """Walk the archive by hand: (ustar name, typeflag, pax records of its x header) per member.

    Also checks what every header must be: ustar magic, empty uname and gname,
    a correct checksum; and that the archive ends with zero blocks to a record.
    """
    out = []
    pos = 0
    pending: list[tuple[bytes, bytes]] = []
    while True:
        block = data[pos : pos + BLOCK]
        if block == bytes(BLOCK):
            break
        assert block[257:265] == b"ustar\x0000"
        assert block[265:329] == bytes(64), "uname/gname must be empty"
        check = int(block[148:154], 8)
        assert check == sum(block[:148]) + 8 * 32 + sum(block[156:])
        size = int(block[124:135], 8)
        typeflag = block[156:157]
        body = data[pos + BLOCK : pos + BLOCK + size]
        pos += BLOCK + -(-size // BLOCK) * BLOCK
        if typeflag == b"x":
            pending = []
            while body:
                length = int(body.split(b" ", 1)[0])
                record, body = body[:length], body[length:]
                key, _, value = record.split(b" ", 1)[1][:-1].partition(b"=")
                pending.append((key, value))
            continue
        assert typeflag in b"0123456", typeflag
        out.append((block[:100].rstrip(b"\0"), typeflag, pending))
        pending = []
    assert data[pos:] == bytes(len(data) - pos)
    assert len(data) % RECORD == 0 and len(data) - pos >= 2 * BLOCK
    return out


def rich_layer() -> Layer:
    """Files, dirs, a setuid file, owners, an xattr, a symlink, a FIFO and a hardlink pair."""
    return (
        Layer()
        .dir("a", 0o755)
        .file("a/b", b"hello", 0o644, uid=1000, gid=1000, xattrs={"user.note": b"n"})
        .file("a-c", b"", 0o600)
        .hardlink("A", "a/b")
        .symlink("s", "/etc/passwd")
        .fifo("p", 0o644)
        .dir("d", 0o700, uid=1000, gid=1000)
        .dir("tmp", 0o1777)
        .file("su", b"#!", 0o4755)
        .file("usr/lib/implicit", b"x")  # usr and usr/lib are implicit: mtime "now"
    )


# -- the member list ----------------------------------------------------------------------

EXPECTED: list[Member] = [
    (".", tarfile.DIRTYPE, 0o755, 0, 0, 0, SDE, "", {}),
    ("A", tarfile.REGTYPE, 0o644, 1000, 1000, 5, MTIME, "", {"user.note": b"n"}),
    ("a", tarfile.DIRTYPE, 0o755, 0, 0, 0, MTIME, "", {}),
    ("a/b", tarfile.LNKTYPE, 0o644, 1000, 1000, 0, MTIME, "./A", {}),
    ("a-c", tarfile.REGTYPE, 0o600, 0, 0, 0, MTIME, "", {}),
    ("d", tarfile.DIRTYPE, 0o700, 1000, 1000, 0, MTIME, "", {}),
    ("p", tarfile.FIFOTYPE, 0o644, 0, 0, 0, MTIME, "", {}),
    ("s", tarfile.SYMTYPE, 0o777, 0, 0, 0, MTIME, "/etc/passwd", {}),
    ("su", tarfile.REGTYPE, 0o4755, 0, 0, 2, MTIME, "", {}),
    ("tmp", tarfile.DIRTYPE, 0o1777, 0, 0, 0, MTIME, "", {}),
    ("usr", tarfile.DIRTYPE, 0o755, 0, 0, 0, SDE, "", {}),
    ("usr/lib", tarfile.DIRTYPE, 0o755, 0, 0, 0, SDE, "", {}),
    ("usr/lib/implicit", tarfile.REGTYPE, 0o644, 0, 0, 1, MTIME, "", {}),
]
GNU_NAMES = [
    "./",
    "./A",
    "./a/",
    "./a/b",
    "./a-c",
    "./d/",
    "./p",
    "./s",
    "./su",
    "./tmp/",
    "./usr/",
    "./usr/lib/",
    "./usr/lib/implicit",
]


def test_members_equal_a_hand_computed_list(tmp_path: Path) -> None:
    """Sorted members, './' first, numeric owners, modes, clamped mtimes, xattrs, hardlinks."""
    data = export_bytes(apply(tmp_path / "root", rich_layer()))
    assert members(data) == EXPECTED
    names = subprocess.run(["tar", "-tf", "-"], input=data, capture_output=True, check=True)
    assert names.stdout.decode().splitlines() == GNU_NAMES


def test_raw_headers_hold_only_what_is_promised(tmp_path: Path) -> None:
    """No uname/gname/atime/ctime; a pax header only for the xattr; the ustar names as listed."""
    data = export_bytes(apply(tmp_path / "root", rich_layer()))
    headers = raw_headers(data)
    assert [h[0].decode() for h in headers] == GNU_NAMES
    with_pax = {name: records for name, _, records in headers if records}
    assert with_pax == {b"./A": [(b"SCHILY.xattr.user.note", b"n")]}
    assert [t for _, t, _ in headers][:4] == [b"5", b"0", b"5", b"1"]


def test_first_name_in_sorted_order_is_the_file(tmp_path: Path) -> None:
    """Whatever the layer's order, a group's first sorted name is the file; later ones link."""
    layer = (
        Layer()
        .file("m/one", b"data")
        .hardlink("z", "m/one")
        .hardlink("b", "m/one")
        .symlink("ln", "m/one")
        .hardlink("hl-to-symlink", "ln")
    )
    got = [(m[0], m[1], m[7]) for m in members(export_bytes(apply(tmp_path / "r", layer)))]
    assert got == [
        (".", tarfile.DIRTYPE, ""),
        ("b", tarfile.REGTYPE, ""),
        ("hl-to-symlink", tarfile.SYMTYPE, "m/one"),
        ("ln", tarfile.LNKTYPE, "./hl-to-symlink"),
        ("m", tarfile.DIRTYPE, ""),
        ("m/one", tarfile.LNKTYPE, "./b"),
        ("z", tarfile.LNKTYPE, "./b"),
    ]


# -- reproducibility ----------------------------------------------------------------------


def test_byte_identical_across_runs(tmp_path: Path) -> None:
    """Two exports of one tree have the same bytes, with and without SOURCE_DATE_EPOCH."""
    root = apply(tmp_path / "root", rich_layer())
    assert export_bytes(root) == export_bytes(root)
    assert export_bytes(root, None) == export_bytes(root, None)


def test_byte_identical_across_separately_applied_copies(tmp_path: Path) -> None:
    """Two applies of the same layers (other inodes, other implicit-dir mtimes) export the same."""
    layers = (rich_layer(), Layer().file("usr/lib/more", b"2").whiteout("a-c"))
    one = apply(tmp_path / "one", *layers)
    # Shift the second copy's inode numbers and listing order, and its implicit dirs' times.
    (tmp_path / "spacer").mkdir()
    for i in range(50):
        (tmp_path / "spacer" / str(i)).write_bytes(b"")
    two = apply(tmp_path / "two", *layers)
    later = (MTIME + 5000) * 10**9
    os.utime(two / "usr", ns=(later, later))
    assert os.lstat(one / "su").st_ino != os.lstat(two / "su").st_ino
    assert os.lstat(one / "usr").st_mtime_ns != os.lstat(two / "usr").st_mtime_ns
    assert export_bytes(one) == export_bytes(two)
    assert export_bytes(one, None) != export_bytes(two, None)  # the clamp is what makes them equal


def test_clamp_only_lowers_mtimes(tmp_path: Path) -> None:
    """Times after SOURCE_DATE_EPOCH become it; earlier ones stay (also negative ones)."""
    root = tmp_path / "r"
    root.mkdir()
    for name, sec in (("early", 5), ("late", SDE + 10), ("neg", -5)):
        (root / name).write_bytes(b"")
        os.utime(root / name, ns=(sec * 10**9, sec * 10**9 + 999_999_999))
    os.utime(root, ns=(0, 0))
    got = {m[0]: m[6] for m in members(export_bytes(root))}
    assert got == {".": 0, "early": 5, "late": SDE, "neg": -5}
    neg = [h for h in raw_headers(export_bytes(root)) if h[0] == b"./neg"]
    assert neg[0][2] == [(b"mtime", b"-5")]


# -- reading back -------------------------------------------------------------------------


def _roundtrip_tree(tmp_path: Path) -> Path:
    layer = rich_layer()
    layer.file("long/" + "n" * 150, b"long name")
    layer.symlink("longlink", "t" * 120)
    layer.file("caf\u00e9", b"utf-8 name")
    if IS_ROOT:
        layer.device("dev/null", "char", 1, 3).device("dev/loop0", "block", 7, 0, mode=0o660)
        layer.file("owned", b"", uid=3_000_000, gid=4_000_000)
        layer.file("ping", b"", xattrs={"security.capability": b"\x01\x00\x00\x02" + bytes(16)})
    root = apply(tmp_path / "src", layer)
    for sub in ("nonutf8-\udcff", "nonutf8-\udcff/x"):
        (root / sub).mkdir() if sub.endswith("\udcff") else (root / sub).write_bytes(b"x")
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames]:
            os.utime(os.path.join(dirpath, name), ns=(SDE * 10**9,) * 2, follow_symlinks=False)
    os.utime(root, ns=(SDE * 10**9,) * 2)
    return root


def test_gnu_tar_lists_and_extracts_the_same_tree(tmp_path: Path) -> None:
    """`tar -tvf` reads every member; `tar -xpf` of it gives a tree `extractor diff` finds equal."""
    root = _roundtrip_tree(tmp_path)
    archive = tmp_path / "out.tar"
    archive.write_bytes(export_bytes(root, None))
    listing = subprocess.run(["tar", "-tvf", str(archive)], capture_output=True, check=True)
    assert len(listing.stdout.splitlines()) == len(members(archive.read_bytes()))
    assert b"./long/" + b"n" * 150 in listing.stdout
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", str(archive)],
        cwd=out,
        check=True,
    )
    left = list(diff_trees(root, out, mtime=True))
    if not IS_ROOT:  # GNU tar as a user can't chown, and the owner record is not a member
        left = [d for d in left if not (d.a or "").startswith(OWNER_XATTR)]
    assert left == []


def test_extractor_applies_its_own_export(tmp_path: Path) -> None:
    """The export, applied as a layer by the engine, gives back an equal tree."""
    root = _roundtrip_tree(tmp_path)
    back = tmp_path / "back"
    back.mkdir()
    apply_layers(back, [io.BytesIO(export_bytes(root, None))])
    assert list(diff_trees(root, back, mtime=True)) == []


def test_pax_records_for_what_ustar_cannot_hold(tmp_path: Path) -> None:
    """Long names, long link targets and non-UTF-8 names get path/linkpath/hdrcharset records."""
    root = _roundtrip_tree(tmp_path)
    headers = {h[0]: h[2] for h in raw_headers(export_bytes(root))}
    long_name = b"./long/" + b"n" * 150
    assert headers[long_name[:100]] == [(b"path", long_name)]
    assert headers[b"./longlink"] == [(b"linkpath", b"t" * 120)]
    assert headers[b"./nonutf8-\xff/"] == [
        (b"hdrcharset", b"BINARY"),
        (b"path", b"./nonutf8-\xff/"),
    ]
    assert headers["./café".encode()] == [(b"path", "./café".encode())]
    if IS_ROOT:
        assert headers[b"./owned"] == [(b"uid", b"3000000"), (b"gid", b"4000000")]
    for records in headers.values():
        keys = [k for k, _ in records]
        assert not {b"atime", b"ctime", b"uname", b"gname"} & set(keys)
        xattr_keys = [k for k in keys if k.startswith(b"SCHILY.xattr.")]
        assert xattr_keys == sorted(xattr_keys)


def test_pax_record_length_counts_itself() -> None:
    """A record's decimal length includes its own digits, across the 9/10 and 99/100 edges."""
    for size in range(300):
        record = pax_record(b"k", b"v" * size)
        assert int(record.split(b" ")[0]) == len(record)
        assert record.endswith(b"=" + b"v" * size + b"\n")


def test_writer_refuses_an_xattr_name_pax_cannot_carry() -> None:
    """An xattr name with '=' would corrupt the record: refused as bad input."""
    writer = TarWriter(io.BytesIO())
    with pytest.raises(BadInputError, match="can't be stored"):
        writer.member(b"./f", b"0", mode=0o644, uid=0, gid=0, mtime=0, xattrs=[(b"user.a=b", b"v")])


# -- owners recorded by a rootless apply --------------------------------------------------

OWNER_CASES = [(0, 0), (1, 0), (0, 1), (1000, 1000), (65534, 65534), (2**32 - 1, 128)]


@pytest.mark.parametrize(("uid", "gid"), OWNER_CASES)
def test_rootless_owner_record_round_trip(uid: int, gid: int) -> None:
    """parse_rootless_owner reads back what the engine's rootless_owner_record writes."""
    assert parse_rootless_owner(rootless_owner_record(uid, gid)) == (uid, gid)


@pytest.mark.parametrize(
    "raw",
    [b"\x08", b"\x08\x80", b"\x0a\x05ab", b"\x0f\x01", b"\x08" + b"\xff" * 10 + b"\x01"],
    ids=["no-value", "truncated-varint", "truncated-bytes", "bad-wire-type", "oversized"],
)
def test_rootless_owner_record_malformed(raw: bytes) -> None:
    """A malformed record is a ValueError, never a silent owner."""
    with pytest.raises(ValueError):
        parse_rootless_owner(raw)


def test_owner_comes_from_the_rootless_xattr_which_is_not_exported(tmp_path: Path) -> None:
    """A user.rootlesscontainers record gives the member's uid/gid; the xattr itself is dropped."""
    root = tmp_path / "r"
    root.mkdir()
    (root / "f").write_bytes(b"")
    os.setxattr(root / "f", OWNER_XATTR, rootless_owner_record(1234, 5678))
    os.setxattr(root / "f", "user.keep", b"yes")
    got = {m[0]: m for m in members(export_bytes(root))}
    assert got["f"][3:5] == (1234, 5678)
    assert got["f"][8] == {"user.keep": b"yes"}
    os.setxattr(root / "f", OWNER_XATTR, b"\x08")
    with pytest.raises(BadInputError, match=r"user\.rootlesscontainers"):
        export_bytes(root)


def test_rootless_mode_maps_the_invoking_user_to_root(tmp_path: Path) -> None:
    """With rootless, the invoker's own files without a record are 0:0; others keep their ids."""
    root = tmp_path / "r"
    root.mkdir()
    (root / "mine").write_bytes(b"")
    if IS_ROOT:
        (root / "theirs").write_bytes(b"")
        os.chown(root / "theirs", 4321, 4321)
    got = {m[0]: m[3:5] for m in members(export_bytes(root, rootless=True))}
    assert got["mine"] == (0, 0) and got["."] == (0, 0)
    if IS_ROOT:
        assert got["theirs"] == (4321, 4321)


# -- images -------------------------------------------------------------------------------


def _image_layers() -> list[bytes]:
    base = (
        Layer()
        .dir("etc")
        .file("etc/passwd", b"root:x:0:0\n")
        .file("bin/app", b"v1", 0o755, uid=1000, gid=1000)
        .symlink("bin/sh", "app")
        .file("shadow", b"secret", 0o000)  # as RHEL ships /etc/shadow: unreadable unless root
    )
    top = Layer().file("bin/app", b"v2", 0o4755).hardlink("bin/app2", "bin/app").whiteout("etc")
    return [base.tar(), top.tar()]


def _images(tmp_path: Path) -> dict[str, Path]:
    layers = _image_layers()
    oci = OciLayout()
    oci.tag(oci.image(layers, compression="gzip"), "v1")
    save = DockerSave()
    save.image(layers, repo_tags=["app:v1"])
    return {
        "oci-dir": oci.write_dir(tmp_path / "layout"),
        "oci-tar": oci.write_tar(tmp_path / "oci.tar", "zstd"),
        "docker-save": save.write(tmp_path / "save.tar"),
    }


def test_one_image_one_sha256_in_every_form(tmp_path: Path) -> None:
    """The docker-save and OCI (dir, archive) forms of one image export to identical bytes."""
    outputs = {}
    for form, image in _images(tmp_path).items():
        out = tmp_path / f"{form}.out.tar"
        proc = run("export", str(image), str(out), "--source-date-epoch", str(SDE))
        assert proc.returncode == 0, proc.stderr.decode()
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        assert f"sha256:{digest} -> {out}" in proc.stderr.decode()
        outputs[form] = out.read_bytes()
    assert len(set(outputs.values())) == 1
    got = [(m[0], m[1], m[2], m[3]) for m in members(outputs["oci-dir"])]
    assert got == [
        (".", tarfile.DIRTYPE, 0o755, 0),
        ("bin", tarfile.DIRTYPE, 0o755, 0),
        ("bin/app", tarfile.REGTYPE, 0o4755, 0),
        ("bin/app2", tarfile.LNKTYPE, 0o4755, 0),
        ("bin/sh", tarfile.SYMTYPE, 0o777, 0),
        ("shadow", tarfile.REGTYPE, 0o000, 0),
    ]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".extractor-export")]
    assert leftovers == []


@pytest.mark.root
def test_rootless_export_of_an_image_matches_the_root_export(shm_dir: Path) -> None:
    """As uid 65534 the unpack records owners in xattrs; the export reads them back: same bytes."""
    images = _images(shm_dir)
    work = shm_dir / "work"
    work.mkdir()
    os.chown(work, NOBODY, NOBODY)
    for path in [shm_dir, *shm_dir.rglob("*")]:
        if path != work:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    as_root = run("export", str(images["docker-save"]), str(work / "root.tar"), "-q", env=_env())
    assert as_root.returncode == 0, as_root.stderr.decode()
    rootless = subprocess.run(
        [*AS_NOBODY, *MODULE, "export", str(images["oci-dir"]), str(work / "nobody.tar"), "-q"],
        capture_output=True,
        timeout=60,
        cwd=shm_dir,
        env=_env(),
    )
    assert rootless.returncode == 0, rootless.stderr.decode()
    assert os.lstat(work / "nobody.tar").st_uid == NOBODY
    assert (work / "nobody.tar").read_bytes() == (work / "root.tar").read_bytes()


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONDONTWRITEBYTECODE="1", SOURCE_DATE_EPOCH=str(SDE))


# -- the command --------------------------------------------------------------------------


def test_cli_stdout_equals_file_and_summary(tmp_path: Path) -> None:
    """'-' writes the same bytes to stdout; the summary on stderr names entries and sha256."""
    root = apply(tmp_path / "root", rich_layer())
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(SDE))
    to_file = run("export", str(root), str(tmp_path / "x.tar"), env=env)
    to_stdout = run("export", str(root), "-", "-q", env=env)
    assert to_file.returncode == to_stdout.returncode == 0
    data = (tmp_path / "x.tar").read_bytes()
    assert to_stdout.stdout == data == export_bytes(root)
    assert to_stdout.stderr == b""
    digest = hashlib.sha256(data).hexdigest()
    assert to_file.stderr.decode() == (
        f"exported {len(EXPECTED)} entries, {len(data) / 2**20:.1f} MiB, "
        f"sha256:{digest} -> {tmp_path / 'x.tar'}\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root", "x.tar"]


def test_cli_source_date_epoch_flag_and_env(tmp_path: Path) -> None:
    """--source-date-epoch wins over the environment; an empty variable means unset."""
    root = apply(tmp_path / "root", rich_layer())
    flag = run("export", str(root), "-", "--source-date-epoch", str(SDE), env=_env_with("1"))
    assert flag.stdout == export_bytes(root, SDE)
    env = run("export", str(root), "-", env=_env_with(str(SDE)))
    assert env.stdout == export_bytes(root, SDE)
    empty = run("export", str(root), "-", env=_env_with(""))
    assert {m[0]: m[6] for m in members(empty.stdout)}["usr"] > SDE


def _env_with(epoch: str) -> dict[str, str]:
    return dict(os.environ, SOURCE_DATE_EPOCH=epoch)


CLI_ERRORS = {
    "bad-env": (lambda r, t: [str(r), str(t / "o.tar")], "x1", 2, "SOURCE_DATE_EPOCH"),
    "negative-flag": (
        lambda r, t: [str(r), str(t / "o.tar"), "--source-date-epoch=-1"],
        "",
        2,
        "--source-date-epoch",
    ),
    "missing-source": (lambda r, t: [str(t / "nope"), str(t / "o.tar")], "", 4, "no such"),
    "out-inside-source": (lambda r, t: [str(r), str(r / "etc.tar")], "", 2, "contain itself"),
    "not-an-image": (lambda r, t: [str(r / "su"), str(t / "o.tar")], "", 3, "archive"),
}


@pytest.mark.parametrize("case", CLI_ERRORS)
def test_cli_errors(tmp_path: Path, case: str) -> None:
    """Bad epochs are usage errors (2), a missing source 4, OUT inside SOURCE 2; one line each."""
    root = apply(tmp_path / "root", rich_layer())
    args, epoch, code, words = CLI_ERRORS[case]
    before = snapshot(tmp_path)
    del before["."]  # an image's scratch directory comes and goes beside OUT
    proc = run("export", *args(root, tmp_path), env=_env_with(epoch))
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("extractor: error: ") and words in lines[0]
    after = snapshot(tmp_path)
    del after["."]
    assert after == before


def test_sockets_are_left_out_and_counted(tmp_path: Path) -> None:
    """tar can't hold a socket: it is not a member, and the summary says so."""
    root = tmp_path / "r"
    root.mkdir()
    (root / "f").write_bytes(b"")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "s"))
        proc = run("export", str(root), str(tmp_path / "o.tar"))
    finally:
        sock.close()
    assert proc.returncode == 0
    assert [m[0] for m in members((tmp_path / "o.tar").read_bytes())] == [".", "f"]
    assert proc.stderr.decode().endswith("(1 sockets left out)\n")


def test_export_reads_and_never_writes(tmp_path: Path) -> None:
    """Exporting changes nothing in the source tree."""
    root = apply(tmp_path / "root", rich_layer())
    os.chmod(root / "a", 0o555)
    before = snapshot(root)
    try:
        export_bytes(root)
        assert snapshot(root) == before
        assert stat.S_IMODE(os.lstat(root / "a").st_mode) == 0o555
    finally:
        os.chmod(root / "a", 0o755)  # so that a non-root run can clean up
