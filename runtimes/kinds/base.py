"""What every artifact kind answers: one class per kind of thing glmkit can open (a GGUF file, an OpenVINO IR
directory, a GLM-4V IR, a transformers checkpoint), each in its own module and registered in `kinds/__init__.py`.

Callers ask the kind — `kind_of(model)` — and never compare backend names or file names: load() opens through it,
logits() and artifact_token_ids() compute through it, glm-serve reads its capabilities before loading, glm-bench
its bytes and its engine's own paths. A new kind is one module here and one line in the registry
(docs/architecture.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from glmkit.glm4.errors import GlmkitError

from ..capabilities import Capabilities


class ArtifactKind(ABC):
    #: how results and messages name the kind
    name = "?"
    #: the engine that runs it: load(backend=...), and the "backend" field of every result
    backend = "?"
    #: the kind in a sentence's object position: "is not available for a GLM-4V model"
    label = "?"
    capabilities = Capabilities()
    #: the engine's own paths beside glmkit's, for glm-bench (None where the engine has none):
    #: raw_stamps(runtime, ids, n) → [start, one wall-clock stamp per token], nothing of glmkit in between
    raw_stamps: Callable[..., list[float]] | None = None
    #: own_chat(runtime, model) → (turn(messages, answer_tokens) → (ttft_ms, text), close): its multi-turn path
    own_chat: Callable[..., Any] | None = None
    own_chat_path = ""
    #: pass_timer(model, context, threads): a context manager yielding timed(n) → ms of one pass over n tokens
    pass_timer: Callable[..., Any] | None = None

    @abstractmethod
    def claims(self, path: Path) -> bool:
        """True when `path` is (or is meant to be) this kind of artifact; cheap: a magic or a file name."""

    def check(self, model: str) -> None:  # noqa: B027  (kinds whose claim proves the artifact whole keep this)
        """Raise GlmkitError naming what is missing and how to make it, before an engine sees the artifact."""

    @abstractmethod
    def open(self, model: str, device: str = "CPU", **options):
        """A Runtime of the artifact (options already checked against the capabilities)."""

    @abstractmethod
    def logits(self, model: str | Path, ids: list[int], kv_cache: str | None = None,
               pixels: np.ndarray | None = None) -> np.ndarray:
        """[positions, vocab] float32 logits of `ids` by the kind's engine, at the settings that measure the
        weights (runtimes/logits.py); `pixels`: an image for the prompt's image marker, where the kind takes one."""

    @abstractmethod
    def token_ids(self, model: str | Path, texts: list[str]) -> list[list[int]]:
        """Each text's ids by the tokenizer the kind's engine runs (plain text, no special tokens added)."""

    @abstractmethod
    def weight_bytes(self, model: str | Path, runtime=None) -> int:
        """Bytes of weights one decode step reads (the embedding table only where it is tied to the head)."""

    def no_image(self, pixels) -> None:
        if pixels is not None:
            raise GlmkitError(f"{self.label} reads text only; an image needs a GLM-4V model")
