"""The configurable bounds (``Limits``): each refuses just past its value, cleanly.

Every limit is checked at its value (accepted) and one below it (refused with
a one-line error naming the entry), through the API and the CLI, on real
trees with the canary watching for writes outside DEST. The hardlink
bookkeeping's lazy shedding of stale names is checked for the cases where a
name stops being a link before its target is written again.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from builders import Layer

from extractor import (
    ApplyOptions,
    BadInputError,
    ExtractorError,
    Limits,
    UnsafeEntryError,
    apply_layers,
)


def _apply(dest: Path, *layers: Layer, **limits: int) -> None:
    options = ApplyOptions(limits=Limits(**limits))
    apply_layers(dest, [io.BytesIO(layer.tar()) for layer in layers], options)


def _refused(dest: Path, kind: type[ExtractorError], *layers: Layer, **limits: int) -> str:
    with pytest.raises(kind) as caught:
        _apply(dest, *layers, **limits)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_are_documented_values() -> None:
    """The defaults the README's Limits table and ``--help`` quote."""
    assert Limits() == Limits(
        path_bytes=65536,
        header_bytes=16 << 20,
        symlinks=40,
        hardlinks=500_000,
        entries=2_000_000,
        layer_bytes=None,
    )


def test_header_bytes_bounds_pax_headers(canary: Any) -> None:
    """A 100 KiB xattr needs a PAX header over 64 KiB: taken by default, refused below."""
    value = b"v" * (100 << 10)
    layer = Layer().file("f", b"data", xattrs={"user.big": value})
    message = _refused(canary.dest, BadInputError, layer, header_bytes=64 << 10)
    assert "PAX header" in message and "65536 allowed" in message
    _apply(canary.dest, layer)
    assert (canary.dest / "f").read_bytes() == b"data"


def test_header_bytes_bounds_gnu_long_names(canary: Any) -> None:
    """A GNU long name is a header payload like a PAX record."""
    import tarfile

    name = "/".join(["n" * 200] * 15)  # 3014 bytes
    layer = Layer(tarfile.GNU_FORMAT).file(name, b"x")
    message = _refused(canary.dest, BadInputError, layer, header_bytes=2048)
    assert "GNU long name" in message
    _apply(canary.dest, layer, header_bytes=4096)
    assert (canary.dest / name).read_bytes() == b"x"


def _chain(n: int) -> Layer:
    """Symlinks l1 -> l2 -> ... -> ln -> d, and a file written through l1."""
    layer = Layer().dir("d")
    for i in range(1, n + 1):
        layer.symlink(f"l{i}", f"l{i + 1}" if i < n else "d")
    return layer


@pytest.mark.parametrize("n", [3, 41])
def test_symlinks_bounds_resolution(canary: Any, n: int) -> None:
    """A parent reached through n links resolves with ``symlinks=n`` and is a loop with n - 1."""
    chain = _chain(n)
    write = Layer().file("l1/f", b"through")
    message = _refused(canary.dest / "a", UnsafeEntryError, chain, write, symlinks=n - 1)
    assert "too many levels of symbolic links" in message
    _apply(canary.dest / "b", chain, write, symlinks=n)
    assert (canary.dest / "b" / "d" / "f").read_bytes() == b"through"


def _links(count: int) -> Layer:
    layer = Layer().file("t", b"target").dir("h")
    for i in range(count):
        layer.hardlink(f"h/{i}", "t")
    return layer


def test_hardlinks_bounds_links_per_layer(canary: Any) -> None:
    """Five links need ``hardlinks=5``; with 4 the fifth is refused by name."""
    with pytest.raises(BadInputError) as caught:
        _apply(canary.dest / "a", _links(5), hardlinks=4)
    assert caught.value.entry == "h/4"
    assert "--max-hardlinks" in str(caught.value)
    _apply(canary.dest / "b", _links(5), hardlinks=5)
    assert os.stat(canary.dest / "b" / "t").st_nlink == 6


def test_hardlinks_limit_is_per_layer(canary: Any) -> None:
    """Each layer starts its count afresh."""
    more = Layer().dir("g").hardlink("g/0", "t").hardlink("g/1", "t")
    _apply(canary.dest, _links(2), more, hardlinks=2)
    assert os.stat(canary.dest / "t").st_nlink == 5


def test_remade_links_count_against_the_limit(canary: Any) -> None:
    """A target written again remakes its links, and each remade link counts:
    rewriting a much-linked file over and over is bounded work."""
    lower = Layer().file("t", b"lower")
    upper = Layer().dir("h").hardlink("h/0", "t").hardlink("h/1", "t").file("t", b"upper")
    _refused(canary.dest / "a", BadInputError, lower, upper, hardlinks=3)
    _apply(canary.dest / "b", lower, upper, hardlinks=4)
    assert (canary.dest / "b" / "h" / "1").read_bytes() == b"upper"
    assert os.stat(canary.dest / "b" / "t").st_nlink == 3


def test_entries_bounds_members_per_layer(canary: Any) -> None:
    """Three entries need ``entries=3``; with 2 the third is refused by name."""
    layer = Layer().file("a").file("b").file("c")
    with pytest.raises(BadInputError) as caught:
        _apply(canary.dest / "x", layer, entries=2)
    assert caught.value.entry == "c"
    _apply(canary.dest / "y", layer, entries=3)
    assert sorted(os.listdir(canary.dest / "y")) == ["a", "b", "c"]


# -- the lazy link bookkeeping ------------------------------------------------------


def test_link_rewritten_as_file_is_not_remade(canary: Any) -> None:
    """A name that was a link and is then a file keeps its own inode when the
    target is written again later in the layer."""
    layer = Layer().file("t", b"1").hardlink("l", "t").file("l", b"mine").file("t", b"2")
    _apply(canary.dest, layer)
    assert (canary.dest / "l").read_bytes() == b"mine"
    assert (canary.dest / "t").read_bytes() == b"2"
    assert os.stat(canary.dest / "l").st_ino != os.stat(canary.dest / "t").st_ino


def test_link_relinked_elsewhere_follows_its_new_target(canary: Any) -> None:
    """Rewriting the first target does not pull back a link that moved on."""
    layer = (
        Layer()
        .file("t1", b"one")
        .file("t2", b"two")
        .hardlink("l", "t1")
        .hardlink("l", "t2")
        .file("t1", b"one again")
    )
    _apply(canary.dest, layer)
    assert os.stat(canary.dest / "l").st_ino == os.stat(canary.dest / "t2").st_ino
    assert os.stat(canary.dest / "t1").st_nlink == 1


def test_link_dropped_and_relinked_is_remade_once(canary: Any) -> None:
    """l -> t, l a file, l -> t again, t rewritten: l shares the new t (listed twice, made once)."""
    layer = (
        Layer()
        .file("t", b"1")
        .hardlink("l", "t")
        .file("l", b"mine")
        .hardlink("l", "t")
        .file("t", b"2")
    )
    _apply(canary.dest, layer, hardlinks=3)
    assert (canary.dest / "l").read_bytes() == b"2"
    assert os.stat(canary.dest / "t").st_nlink == 2


# -- the CLI --------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "extractor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("flag", "value", "enough", "words"),
    [
        ("--max-entries", "3", "4", "more than 3 entries in one layer"),
        ("--max-hardlinks", "1", "4", "more hardlinks made in one layer than the limit"),
        ("--max-layer-bytes", "2048", "4096", "larger than 2048 bytes uncompressed"),
    ],
)
def test_cli_limit_flags_refuse_in_one_line(
    tmp_path: Path, flag: str, value: str, enough: str, words: str
) -> None:
    """Each flag reaches the engine: exit 3, one line naming layer and entry."""
    layer = tmp_path / "l.tar"
    layer.write_bytes(_links(2).tar())
    proc = _cli("apply", "-q", str(tmp_path / "out"), str(layer), flag, value)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert "h/" in lines[0]  # the entry
    ok = _cli("apply", "-q", str(tmp_path / "ok"), str(layer), flag, enough)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_cli_limit_flags_want_positive_numbers(tmp_path: Path, value: str) -> None:
    """A limit of zero or less, or not a number, is a usage error (exit 2)."""
    proc = _cli("apply", str(tmp_path / "out"), "x.tar", "--max-symlinks", value)
    assert proc.returncode == 2
    assert "want a positive whole number" in proc.stderr


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "ancestor-cached"])
def test_symlinks_counted_the_same_from_a_cached_ancestor(canary: Any, warm: bool) -> None:
    """Links followed to reach a cached parent still count: ``d1`` is reached through
    two links and ``d1/s1`` through two more, so with ``symlinks=3`` writing below
    ``a/s1`` is a loop whether or not an entry under ``a`` resolved (and cached) it first."""
    layer = (
        Layer()
        .dir("d1/d2")
        .symlink("a", "b")
        .symlink("b", "d1")
        .symlink("d1/s1", "s2")
        .symlink("d1/s2", "d2")
    )
    if warm:
        layer.file("a/warm", b"w")
    layer.file("a/s1/f", b"x")
    message = _refused(canary.dest / "x", UnsafeEntryError, layer, symlinks=3)
    assert "too many levels" in message
    _apply(canary.dest / "y", layer, symlinks=4)
    assert (canary.dest / "y" / "d1" / "d2" / "f").read_bytes() == b"x"


def test_conflict_detector_reads_headers_within_the_limits(tmp_path: Path) -> None:
    """The detector holds every header in memory, so the entries bound applies there too."""
    from extractor.conflicts import read_stack

    layer = tmp_path / "l.tar"
    layer.write_bytes(Layer().file("a").file("b").file("c").tar())
    with pytest.raises(BadInputError) as caught:
        read_stack([str(layer)], Limits(entries=2))
    assert "more than 2 entries in one layer" in str(caught.value)
    assert caught.value.entry == "c"
    stack, _ = read_stack([str(layer)], Limits(entries=3))
    assert [e.path for e in stack[0]] == ["a", "b", "c"]


def test_layer_bytes_bounds_a_decompression_bomb(canary: Any) -> None:
    """64 MiB of zeros in a few KiB of gzip: refused at 16 MiB by name, taken by default."""
    layer = Layer().file("small", b"s").file("bomb", bytes(64 << 20)).file("after", b"a")
    packed = gzip.compress(layer.tar(), compresslevel=9)
    assert len(packed) < 256 << 10
    options = ApplyOptions(limits=Limits(layer_bytes=16 << 20))
    with pytest.raises(BadInputError) as caught:
        apply_layers(canary.dest / "a", [io.BytesIO(packed)], options)
    assert caught.value.entry == "bomb"
    assert "larger than 16777216 bytes uncompressed" in str(caught.value)
    assert not (canary.dest / "a" / "after").exists()
    apply_layers(canary.dest / "b", [io.BytesIO(packed)])
    assert os.path.getsize(canary.dest / "b" / "bomb") == 64 << 20


def test_conflicts_command_takes_the_reading_limits(tmp_path: Path) -> None:
    """``extractor conflicts`` reads headers within --max-entries (and has no flags for
    the limits only an apply meets)."""
    layer = tmp_path / "l.tar"
    layer.write_bytes(Layer().file("a").file("b").file("c").tar())
    refused = _cli("conflicts", "--layers", str(layer), "--max-entries", "2")
    assert refused.returncode == 3, refused.stderr
    assert "more than 2 entries in one layer" in refused.stderr
    assert _cli("conflicts", "--layers", str(layer), "--max-entries", "3").returncode == 0
    unknown = _cli("conflicts", "--layers", str(layer), "--max-hardlinks", "3")
    assert unknown.returncode == 2
