"""The benchmark harness's memory verdict: bounded is flat, a leak is not."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

TOP = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(TOP / "benchmarks"))
    return importlib.import_module("run")


def test_warm_up_then_level_is_flat(run: ModuleType) -> None:
    """The curve of a real 9 GiB run: RSS climbs for a third of it, then holds."""
    curve = [0, 52, 52, 54, 54, 54, 54, 61, 62, 62, 64, 67, 73, 73, 73, 73, 73, 73, 73, 73]
    curve += [73, 73, 74, 74]
    growth = run.flat_growth([float(x) for x in curve])
    assert growth is not None and growth <= 8


def test_a_steady_leak_is_not_flat(run: ModuleType) -> None:
    """30 MiB lost evenly over the run rises 10 MiB from one third's peak to the next."""
    curve = [50 + 30 * i / 59 for i in range(60)]
    growth = run.flat_growth(curve)
    assert growth is not None and growth > 8
    assert growth == pytest.approx(10, abs=1)


def test_too_few_samples_are_not_judged(run: ModuleType) -> None:
    assert run.flat_growth([50.0] * 14) is None
    assert run.flat_growth([50.0] * 15) == 0
