"""How an artifact's own tokenizer encodes text (each kind in runtimes/kinds/ knows its engine's): llama.cpp's
for a GGUF, openvino-tokenizers' IR for an OpenVINO directory, tokenizers' tokenizer.json for a checkpoint."""

from __future__ import annotations

from pathlib import Path

from .kinds import kind_of
from .kinds.transformers import tokenizer_json_ids


def artifact_token_ids(model: str | Path, texts: list[str], ir: bool = True) -> list[list[int]]:
    """Token ids of each text by the artifact's tokenizer, plain text with no special tokens added. For an
    OpenVINO directory, ir=True reads the IR tokenizer (what openvino-genai and OVMS use); ir=False the
    tokenizer.json beside it (what glmkit's runtime uses)."""
    kind = kind_of(model)
    kind.check(str(model))
    if not ir and Path(model).is_dir():
        return tokenizer_json_ids(model, texts)
    return kind.token_ids(model, texts)
