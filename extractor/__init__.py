"""extractor: apply container image layers onto a directory, oldest first, safely.

The public API::

    from extractor import apply_layers, ApplyOptions
    result = apply_layers("rootfs", ["base.tar.gz", "app.tar.zst"])
    print(result.entries, [layer.diff_id for layer in result.layers])

Errors are ``ExtractorError`` subclasses; each has an ``exit_code``.
"""

from . import native

native.choose()  # the compiled modules, unless out of date or EXTRACTOR_PURE=1

from .apply import ApplyOptions, LayerInput, apply_layers  # noqa: E402
from .errors import (  # noqa: E402
    BadInputError,
    ExtractorError,
    NotFoundError,
    OperationalError,
    UnsafeEntryError,
)
from .limits import Limits  # noqa: E402
from .model import ApplyResult, Entry, Kind, LayerReport, Notice  # noqa: E402
from .rootfs import IdMap  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ApplyOptions",
    "ApplyResult",
    "BadInputError",
    "Entry",
    "ExtractorError",
    "IdMap",
    "Kind",
    "LayerInput",
    "LayerReport",
    "Limits",
    "NotFoundError",
    "Notice",
    "OperationalError",
    "UnsafeEntryError",
    "__version__",
    "apply_layers",
]
