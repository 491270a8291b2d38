"""``docker save`` archives: ``manifest.json`` → config and ``layer.tar`` files.

Legacy saves (docker ≤ 24) hold ``<id>/layer.tar`` per layer, uncompressed,
with a symlink ``<id>/layer.tar -> ../<other>/layer.tar`` where a DiffID
repeats; they have no digests but the DiffIDs, so ``LayerRef.digest`` is
``None``. Saves from docker 25 on also carry an OCI layout and their
``Layers`` are ``blobs/sha256/<hex>`` paths, whose name is the blob digest.

``manifest.json`` is a list of entries::

    [{"Config": "<id>.json", "RepoTags": ["busybox:latest"],
      "Layers": ["<id>/layer.tar", ...], "LayerSources": {"sha256:...": {descriptor}}}]
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from ..errors import BadInputError, NotFoundError
from .descriptor import FOREIGN_LAYER_TYPES, Descriptor, parse_descriptor
from .jsondoc import expect_list, expect_object, expect_str, parse_json
from .layers import LayerSpec, Resolved, diff_ids
from .model import Platform
from .oci import config_platform
from .select import Candidate
from .store import Store, member_path

# How writers name the config: docker "<hex>.json", crane/ggcr "sha256:<hex>".
_CONFIG_NAME = re.compile(r"([a-f0-9]{64})\.json|sha256:([a-f0-9]{64})")
_BLOB = re.compile(r"blobs/(sha256)/([a-f0-9]{64})|blobs/(sha512)/([a-f0-9]{128})")


@dataclass(frozen=True)
class Entry:
    """One ``manifest.json`` entry, its paths checked and normalised."""

    position: int
    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]
    layer_sources: dict[str, Descriptor]


def _parse_entry(value: object, i: int) -> Entry:
    what = f"manifest.json[{i}]"
    obj = expect_object(value, what)
    config = member_path(expect_str(obj.get("Config"), f"{what}.Config"), f"{what}.Config")
    tags = obj.get("RepoTags") or []
    repo_tags = tuple(
        expect_str(t, f"{what}.RepoTags[]") for t in expect_list(tags, f"{what}.RepoTags")
    )
    layers = tuple(
        member_path(expect_str(p, f"{what}.Layers[{j}]"), f"{what}.Layers[{j}]")
        for j, p in enumerate(expect_list(obj.get("Layers"), f"{what}.Layers"))
    )
    sources = expect_object(obj.get("LayerSources") or {}, f"{what}.LayerSources")
    layer_sources = {
        k: parse_descriptor(v, f"{what}.LayerSources[{k}]") for k, v in sources.items()
    }
    return Entry(i, config, repo_tags, layers, layer_sources)


def _json_name_digest(path: str) -> str | None:
    m = _CONFIG_NAME.fullmatch(path)
    return f"sha256:{m[1] or m[2]}" if m else None


def digest_of_path(path: str) -> str | None:
    """``sha256:<hex>`` for a ``blobs/sha256/<hex>`` path, else ``None``."""
    m = _BLOB.fullmatch(path)
    if m is None:
        return None
    algorithm, encoded = (m[1], m[2]) if m[1] else (m[3], m[4])
    return f"{algorithm}:{encoded}"


class DockerSaveReader:
    """Candidates and images of a ``manifest.json``."""

    def __init__(self, store: Store, verify: bool = True):
        self._store = store
        self._verify = verify
        doc = parse_json(store.read("manifest.json"), "manifest.json")
        self.entries = [_parse_entry(v, i) for i, v in enumerate(expect_list(doc, "manifest.json"))]
        self._configs: dict[str, tuple[str, dict[str, Any]]] = {}

    def _config(self, entry: Entry) -> tuple[str, dict[str, Any]]:
        if entry.config not in self._configs:
            if not self._store.exists(entry.config):
                raise NotFoundError(f"config {entry.config} is not in this archive")
            data = self._store.read(entry.config)
            config = expect_object(parse_json(data, entry.config), entry.config)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            named = digest_of_path(entry.config) or _json_name_digest(entry.config)
            # The config is named by its digest (blobs/sha256/<hex>, <hex>.json):
            # the DiffIDs every layer is checked against are only as good as it.
            if (
                self._verify
                and named is not None
                and named.startswith("sha256:")
                and named != digest
            ):
                raise BadInputError(
                    f"{entry.config}: digest mismatch: its name says {named}, content is {digest}"
                )
            self._configs[entry.config] = (digest, config)
        return self._configs[entry.config]

    def candidates(self) -> list[Candidate]:
        """One candidate per entry, named by its ``RepoTags``."""
        return [
            Candidate(
                e.position, e.position, e.repo_tags, e.config, e, None, self._store.exists(e.config)
            )
            for e in self.entries
        ]

    def platform_of(self, candidate: Candidate) -> Platform | None:
        """The platform the entry's config names."""
        assert isinstance(candidate.key, Entry)
        if not candidate.present:
            return None
        return config_platform(self._config(candidate.key)[1])

    def repo_tags(self, config_path: str) -> tuple[str, ...]:
        """The ``RepoTags`` of every entry using ``config_path``."""
        return tuple(t for e in self.entries if e.config == config_path for t in e.repo_tags)

    def entry_for(self, config_path: str) -> Entry | None:
        """The first entry whose ``Config`` is ``config_path``."""
        return next((e for e in self.entries if e.config == config_path), None)

    def resolve(self, candidate: Candidate) -> Resolved:
        """The entry's config and its layers as listed."""
        entry = candidate.key
        assert isinstance(entry, Entry)
        return self.resolve_entry(entry)

    def resolve_entry(self, entry: Entry, media_types: dict[str, str] | None = None) -> Resolved:
        """Like ``resolve``; ``media_types`` (blob path → type) comes from an OCI manifest."""
        digest, config = self._config(entry)
        ids = diff_ids(config)
        specs = []
        for i, path in enumerate(entry.layers):
            source = entry.layer_sources.get(ids[i]) if i < len(ids) else None
            foreign = ""
            if source is not None and source.media_type in FOREIGN_LAYER_TYPES:
                where = f" at {source.urls[0]}" if source.urls else ""
                foreign = f"{source.media_type}{where}"
            specs.append(
                LayerSpec(
                    name=path,
                    media_type=(media_types or {}).get(path, ""),
                    digest=digest_of_path(path),
                    size=None,
                    foreign=foreign,
                )
            )
        return Resolved(None, digest, config, specs)
