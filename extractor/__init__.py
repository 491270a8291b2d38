"""extractor: apply container image layers onto a directory, oldest first, safely.

The public API::

    from extractor import apply_layers, ApplyOptions
    result = apply_layers("rootfs", ["base.tar.gz", "app.tar.zst"])
    print(result.entries, [layer.diff_id for layer in result.layers])

Errors are ``ExtractorError`` subclasses; each has an ``exit_code``.
"""

from .apply import ApplyOptions, LayerInput, apply_layers
from .errors import (
    BadInputError,
    ExtractorError,
    NotFoundError,
    OperationalError,
    UnsafeEntryError,
)
from .limits import Limits
from .model import ApplyResult, Entry, Kind, LayerReport, Notice
from .rootfs import IdMap

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
