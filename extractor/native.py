"""The compiled build: which modules it covers, and when the interpreted ones run.

``make native`` compiles the modules every entry passes through with mypyc
(``setup.py``); Python imports such a module's compiled file before its
source. The code is the same either way, so a compiled build must never
lag its sources: if any compiled file is older than its source, or
``EXTRACTOR_PURE=1`` is set, all of them are imported from source instead
(they call each other's classes directly, so it is all or none).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

# Every entry goes through these: its record, the tar reader, the rules, the
# resolver and the writers. The rest runs once per layer or image.
NATIVE = ("model", "paths", "changeset", "tarstream", "rootfs", "writebehind", "apply")

_HERE = os.path.dirname(os.path.abspath(__file__))


def _compiled_file(name: str) -> str | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(_HERE, name + suffix)
        if os.path.exists(path):
            return path
    return None


def stale_modules() -> list[str]:
    """The modules whose compiled file is older than their source (or missing
    while others are compiled)."""
    built = {name: _compiled_file(name) for name in NATIVE}
    if not any(built.values()):
        return []
    stale = []
    for name, path in built.items():
        source = os.path.join(_HERE, name + ".py")
        if path is None or os.stat(path).st_mtime < os.stat(source).st_mtime:
            stale.append(name)
    return stale


class _SourceFirst:
    """Imports the ``NATIVE`` modules from their ``.py`` files.

    A meta path finder needs only ``find_spec``; ``importlib.abc``'s base class
    would cost every start-up 11 ms of imports (``importlib.resources``).
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __package__ or name not in NATIVE:
            return None
        return importlib.util.spec_from_file_location(fullname, os.path.join(_HERE, name + ".py"))


def compiled() -> bool:
    """Whether the ``NATIVE`` modules in use are the compiled ones."""
    module = sys.modules.get(f"{__package__}.apply")
    return module is not None and not (module.__file__ or "").endswith(".py")


def choose() -> None:
    """Before the package imports its modules: use the sources when asked to or
    when the compiled build is out of date."""
    reason = None
    if os.environ.get("EXTRACTOR_PURE") == "1":
        reason = ""
    elif stale := stale_modules():
        reason = (
            f"extractor: the compiled {', '.join(stale)} lag their sources; "
            "running the sources (run `make native` to rebuild)"
        )
    if reason is None or any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        return
    if reason:
        warnings.warn(reason, RuntimeWarning, stacklevel=2)
    sys.meta_path.insert(0, _SourceFirst())
