"""The artifact kinds glmkit opens, in the order they are asked (kinds/base.py says what each answers).

To add a kind: a module here with an ArtifactKind subclass, and one line in KINDS (or, from outside glmkit,
`register(kind)`).
"""

from __future__ import annotations

from pathlib import Path

from glmkit.glm4.errors import GlmkitError

from .base import ArtifactKind
from .gguf import Gguf
from .glm4v import OpenVINOGlm4v
from .openvino import OpenVINOText
from .transformers import TransformersSource

# The last one claims everything (a checkpoint is whatever the source layer can resolve).
KINDS: tuple[ArtifactKind, ...] = (OpenVINOText(), OpenVINOGlm4v(), Gguf(), TransformersSource())
BACKENDS = tuple(dict.fromkeys(k.backend for k in KINDS))


def kind_of(model, backend: str = "auto") -> ArtifactKind:
    """The kind of `model` (backend="auto"), or of the kinds a named backend runs, the one that claims it."""
    if backend != "auto" and backend not in BACKENDS:
        raise GlmkitError(f"backend {backend}: choose one of auto, {', '.join(BACKENDS)}")
    path = Path(str(model)).expanduser()
    able = [k for k in KINDS if backend in ("auto", k.backend)]
    return next((k for k in able if k.claims(path)), able[0])


def register(kind: ArtifactKind) -> None:
    """Ask `kind` before the built-in kinds (so it may claim what they would); its backend joins BACKENDS."""
    global KINDS, BACKENDS
    KINDS = (kind, *KINDS)
    BACKENDS = tuple(dict.fromkeys(k.backend for k in KINDS))


def honouring(option: str) -> tuple[str, ...]:
    """The backends of the kinds that take a load() option."""
    return tuple(dict.fromkeys(k.backend for k in KINDS if option in k.capabilities.options))


__all__ = ["BACKENDS", "KINDS", "ArtifactKind", "honouring", "kind_of", "register"]
