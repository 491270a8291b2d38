"""OCI image layouts: ``index.json`` → (nested indexes) → manifest → config and layers.

Shared by layout directories, OCI archives and docker 25+ saves, which
carry a layout beside their ``manifest.json``. The walk follows
image-index.md: unknown media types in an index are skipped, not errors;
nested indexes are followed to ``MAX_DEPTH``; attestation manifests (buildx
``vnd.docker.reference.type: attestation-manifest``, platform
``unknown/unknown``) and artifacts (a config that is not an image config)
are not candidates. Blobs an index lists may be absent ("missing blobs are
normal": docker exports only the platforms it pulled); that is reported
only if the missing one is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import logs
from ..errors import BadInputError, NotFoundError
from .descriptor import (
    ATTESTATION,
    CONFIG_TYPES,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    blob_path,
    check_blob,
    parse_descriptor,
)
from .jsondoc import expect_list, expect_object, parse_json
from .layers import LayerSpec, Resolved
from .model import Platform
from .select import Candidate
from .store import Store

MAX_DEPTH = 8  # docker 29 writes index → index → manifest; eight is generous
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def _names(desc: Descriptor) -> tuple[str, ...]:
    # The full name first: it reads best in listings ("busybox:latest", not "latest").
    return tuple(
        n for n in (desc.annotations.get(CONTAINERD_NAME), desc.annotations.get(REF_NAME)) if n
    )


def _is_attestation(desc: Descriptor) -> bool:
    if desc.annotations.get("vnd.docker.reference.type") == ATTESTATION:
        return True
    p = desc.platform
    return p is not None and p.os == "unknown" and p.architecture == "unknown"


class OciReader:
    """Candidates and manifests of one OCI layout held by ``store``.

    ``extra_names`` maps a config blob path to more names for the image that
    uses it (docker 25+ ``RepoTags``). Manifests and configs are cached by
    digest: listing platforms and then loading the chosen one reads each once.
    """

    def __init__(
        self,
        store: Store,
        extra_names: Callable[[str], tuple[str, ...]] | None = None,
        verify: bool = True,
    ):
        self._store = store
        self._extra_names = extra_names
        self._verify = verify
        self._docs: dict[str, dict[str, Any]] = {}

    def _doc(self, desc: Descriptor, what: str) -> dict[str, Any]:
        """The JSON document ``desc`` names, checked against its digest and size.

        These are the small blobs everything else is trusted through (the
        config holds the DiffIDs the layers are checked against), and their
        bytes are at hand, so they are verified here; layers are the
        consumer's to verify while streaming.
        """
        if desc.digest not in self._docs:
            path = blob_path(desc.digest)
            if not self._store.exists(path):
                raise NotFoundError(f"{what} {desc.digest} is not in this archive")
            data = self._store.read(path)
            if self._verify:
                check_blob(data, desc, path)
            self._docs[desc.digest] = expect_object(parse_json(data, path), path)
        return self._docs[desc.digest]

    def candidates(self) -> list[Candidate]:
        """Every image manifest the layout lists, in index order (nested indexes flattened)."""
        index = expect_object(
            parse_json(self._store.read("index.json"), "index.json"), "index.json"
        )
        entries = expect_list(index.get("manifests"), "index.json: manifests")
        out: list[Candidate] = []
        for position, value in enumerate(entries):
            desc = parse_descriptor(value, f"index.json: manifests[{position}]")
            names = _names(desc)
            # Entries are one image when they share a name, or when, unnamed,
            # they declare platforms (an index.json that is itself the
            # multi-platform index); an unnamed entry without one stands alone.
            image: object = names or ("platforms" if desc.platform else position)
            self._walk(desc, (position, image), names, 1, out)
        return out

    def _media_type(self, desc: Descriptor) -> str:
        if desc.media_type or not self._store.exists(blob_path(desc.digest)):
            return desc.media_type
        # Old writers omit the descriptor's mediaType; the document says what it is.
        doc = self._doc(desc, "manifest")
        kind = doc.get("mediaType")
        if isinstance(kind, str) and kind:
            return kind
        return OCI_INDEX if "manifests" in doc else OCI_MANIFEST

    def _walk(
        self,
        desc: Descriptor,
        where: tuple[int, object],
        names: tuple[str, ...],
        depth: int,
        out: list[Candidate],
    ) -> None:
        media_type = self._media_type(desc)
        present = self._store.exists(blob_path(desc.digest))
        if media_type in INDEX_TYPES:
            if depth > MAX_DEPTH:
                raise BadInputError(f"indexes nested more than {MAX_DEPTH} deep at {desc.digest}")
            if not present:
                out.append(Candidate(*where, names, desc.digest, desc, desc.platform, False))
                return
            nested = self._doc(desc, "index")
            what = blob_path(desc.digest)
            for i, value in enumerate(expect_list(nested.get("manifests"), f"{what}: manifests")):
                child = parse_descriptor(value, f"{what}: manifests[{i}]")
                self._walk(child, where, names + _names(child), depth + 1, out)
        elif media_type in MANIFEST_TYPES:
            if _is_attestation(desc) or desc.artifact_type:
                return
            if present:
                config = self._config_descriptor(desc)
                if config.media_type and config.media_type not in CONFIG_TYPES:
                    return  # an artifact, not an image
                if self._extra_names is not None:
                    names = names + self._extra_names(blob_path(config.digest))
            out.append(Candidate(*where, names, desc.digest, desc, desc.platform, present))
        else:
            logs.get_logger().debug(
                "index_entry_skipped", media_type=media_type, digest=desc.digest
            )

    def _config_descriptor(self, desc: Descriptor) -> Descriptor:
        manifest = self._doc(desc, "manifest")
        what = blob_path(desc.digest)
        kind = manifest.get("mediaType")
        if isinstance(kind, str) and kind in INDEX_TYPES:
            raise BadInputError(f"{what}: an index where a manifest was expected")
        return parse_descriptor(manifest.get("config"), f"{what}: config")

    def config(self, desc: Descriptor) -> dict[str, Any]:
        """The image config of the manifest ``desc`` names."""
        return self._doc(self._config_descriptor(desc), "config")

    def platform_of(self, candidate: Candidate) -> Platform | None:
        """The candidate's platform: from its descriptor, else from its config."""
        if candidate.platform is not None or not candidate.present:
            return candidate.platform
        assert isinstance(candidate.key, Descriptor)
        return config_platform(self.config(candidate.key))

    def resolve(self, candidate: Candidate) -> Resolved:
        """Read the chosen manifest and config; list its layers."""
        desc = candidate.key
        assert isinstance(desc, Descriptor)
        config_desc = self._config_descriptor(desc)
        if config_desc.media_type and config_desc.media_type not in CONFIG_TYPES:
            raise BadInputError(
                f"{desc.digest} is not an image: config type {config_desc.media_type}"
            )
        config = self._doc(config_desc, "config")
        what = blob_path(desc.digest)
        specs = []
        layers = expect_list(self._doc(desc, "manifest").get("layers"), f"{what}: layers")
        for i, value in enumerate(layers):
            layer = parse_descriptor(value, f"{what}: layers[{i}]")
            specs.append(
                LayerSpec(
                    name=blob_path(layer.digest),
                    media_type=layer.media_type,
                    digest=layer.digest,
                    size=layer.size,
                    urls=layer.urls,
                )
            )
        return Resolved(desc.digest, config_desc.digest, config, specs)


def config_platform(config: dict[str, Any]) -> Platform | None:
    """``os/architecture/variant`` from an image config, if it names them."""
    os_name, arch = config.get("os"), config.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str) or not os_name or not arch:
        return None
    variant = config.get("variant")
    return Platform(os_name, arch, variant if isinstance(variant, str) else "")
