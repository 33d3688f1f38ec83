"""glmkit.convert — GLM-4 checkpoints in, transformers / OpenVINO / GGUF artifacts out.

Layers, each importing only those before it:
  shared facts   errors, families (the registry, pure data), paths, layout, atomic, manifest, progress
  sources        checkpoint, shards, tokenizer, corpus, embedded, synthetic, remap, source
  converters     hf, openvino, gguf (each verifies through verify, which reads logits from glmkit.runtimes)
  cli            glm-convert

Names below load on first use, so `import glmkit.convert.families` (as glmkit.runtimes does) loads no converter.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "GlmkitError": "errors", "VerificationError": "errors",
    "FAMILIES": "families", "Family": "families", "detect": "families",
    "detect_dir": "checkpoint", "open_checkpoint": "checkpoint",
    "Source": "source", "open_source": "source", "resolve": "source", "transformers_dir": "source",
    "to_hf": "hf", "to_openvino": "openvino", "to_gguf": "gguf",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
