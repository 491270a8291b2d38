"""``python -m extractor``: the same as the ``extractor`` command."""

from .cli import run

run()
