"""Reading the small JSON documents of an image, with one-line errors.

Every manifest, index and config is untrusted input: each field is checked
for its type where it is used, and every failure names the document and the
field, so ``manifest.json: Layers[2] is an int, not a string`` is what a user
sees rather than a ``TypeError`` from deep inside a reader.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import BadInputError

# Real manifests and configs are a few KiB; a nix image with hundreds of
# history entries stays under 1 MiB. The cap keeps a hostile "manifest" from
# being read into memory whole.
MAX_JSON = 16 << 20


def show(value: object, limit: int = 80) -> str:
    """A short one-line ``repr`` of an untrusted value, for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_json(data: bytes, what: str) -> Any:
    """Parse ``data`` as JSON; ``what`` names the document in errors."""
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise BadInputError(
            f"{what}: bad JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except (UnicodeDecodeError, RecursionError) as e:
        raise BadInputError(f"{what}: bad JSON: {type(e).__name__}") from None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}"
    )


def expect_object(value: object, what: str) -> dict[str, Any]:
    """``value`` as a JSON object, or a ``BadInputError`` naming ``what``."""
    if not isinstance(value, dict):
        raise BadInputError(f"{what} is {_kind(value)}, not an object")
    return value


def expect_list(value: object, what: str) -> list[Any]:
    """``value`` as a JSON list."""
    if not isinstance(value, list):
        raise BadInputError(f"{what} is {_kind(value)}, not a list")
    return value


def expect_str(value: object, what: str) -> str:
    """``value`` as a JSON string."""
    if not isinstance(value, str):
        raise BadInputError(f"{what} is {_kind(value)}, not a string")
    return value


def optional_str(value: object, what: str) -> str:
    """A string field that may be absent (``""``)."""
    return "" if value is None else expect_str(value, what)


def string_map(value: object, what: str) -> dict[str, str]:
    """An annotations/labels map; entries whose value is not a string are dropped."""
    if value is None:
        return {}
    obj = expect_object(value, what)
    return {k: v for k, v in obj.items() if isinstance(v, str)}
