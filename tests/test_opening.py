"""When layers are opened: the next one early, so that its decoding overlaps
the layer before it, but only where reading it early cannot change what is
read, and never left running after a failure."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest
from builders import Layer
from imagebuilders import DockerSave, OciLayout

from extractor.apply import LayerInput, apply_layers, may_open_early
from extractor.errors import BadInputError
from extractor.images import open_image
from extractor.unpack import layer_inputs

BASE = Layer().dir("etc").file("etc/passwd", b"root\n").tar()
APP = Layer().dir("app").file("app/run", b"#!/bin/sh\n", mode=0o755).tar()


def test_only_regular_files_and_concurrent_openers_are_opened_early(tmp_path: Path) -> None:
    regular = Layer().file("a", b"a").write(tmp_path / "a.tar")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def opener() -> io.BytesIO:
        return io.BytesIO(BASE)

    assert may_open_early(LayerInput(regular))
    assert may_open_early(LayerInput(str(regular)))
    # A FIFO's writer may be waiting for its turn; opening it early would block.
    assert not may_open_early(LayerInput(fifo))
    assert not may_open_early(LayerInput(tmp_path / "missing.tar"))
    assert not may_open_early(LayerInput(tmp_path))
    # A caller's stream is read where it stands, in its turn.
    assert not may_open_early(LayerInput(io.BytesIO(BASE)))
    assert not may_open_early(LayerInput(opener))
    assert may_open_early(LayerInput(opener, concurrent=True))


def test_layout_layers_may_be_read_at_once_and_archive_members_may_not(tmp_path: Path) -> None:
    oci = OciLayout()
    oci.tag(oci.image([BASE, APP]), "v1")
    save = DockerSave()
    save.image([BASE, APP], repo_tags=["demo:v1"])
    cases = {
        oci.write_dir(tmp_path / "layout"): True,
        # An archive's members share one file position: one at a time.
        oci.write_tar(tmp_path / "oci.tar", "none"): False,
        save.write(tmp_path / "save.tar", "none"): False,
    }
    for path, concurrent in cases.items():
        with open_image(str(path)) as image:
            assert image.concurrent_layers is concurrent, path
            assert [x.concurrent for x in layer_inputs(image)] == [concurrent] * 2, path


def _layer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in ("layer-decode", "layer-hash")]


def _fds_on(path: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
        except OSError:
            pass
    return found


def test_a_failure_stops_the_layer_opened_early(tmp_path: Path) -> None:
    """Layer 1 is corrupt while layer 2 decodes ahead: layer 2's threads end and
    its file is closed, and it wrote nothing."""
    good = Layer().file("etc/motd", b"hi\n")
    corrupt = bytearray(good.bytes("gzip"))
    corrupt[len(corrupt) // 2] ^= 0xFF
    first = tmp_path / "1.tar.gz"
    first.write_bytes(bytes(corrupt))
    big = Layer()
    for i in range(64):
        big.file(f"f{i}", os.urandom(1 << 20))  # more than layer 2 may decode ahead
    second = big.write(tmp_path / "2.tar.gz", "gzip")
    dest = tmp_path / "rootfs"
    with pytest.raises(BadInputError, match=r"corrupt gzip|CRC"):
        apply_layers(dest, [first, second])
    deadline = time.monotonic() + 5
    while _layer_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _layer_threads() == []
    assert _fds_on(second) == []
    assert not (dest / "f0").exists()


def test_errors_keep_their_order_when_later_layers_are_opened_early(tmp_path: Path) -> None:
    """Layer 2 is truncated and layer 3 missing: the error is layer 2's, after
    all of layer 1 was applied, exactly as when each is opened in its turn."""
    first = Layer().file("one", b"1\n").write(tmp_path / "1.tar")
    whole = Layer().file("two", os.urandom(1 << 16)).bytes("gzip")
    second = tmp_path / "2.tar.gz"
    second.write_bytes(whole[: len(whole) // 2])
    dest = tmp_path / "rootfs"
    with pytest.raises(BadInputError) as caught:
        apply_layers(dest, [first, second, tmp_path / "3.tar"])
    assert "layer 2/3" in str(caught.value), caught.value
    assert "truncated" in str(caught.value), caught.value
    assert (dest / "one").read_bytes() == b"1\n"
