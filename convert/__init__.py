"""glmkit.convert — GLM-4 checkpoints in, transformers / OpenVINO / GGUF artifacts out.

Sources (checkpoints, synthetic and embedded models) are glmkit.sources, the files every layer writes
glmkit.common, and GLM-4's facts glmkit.glm4; here:
  converters     pipeline (the steps every target shares), and hf, openvino, gguf: what each target plugs into
                 it (each verifies through verify, which reads logits from glmkit.runtimes)
  cli            glm-convert

Names below load on first use, so importing this package loads no converter.
"""

from __future__ import annotations

import importlib

# name → module (relative to this package, or absolute for glmkit.glm4's facts re-exported for convenience)
_EXPORTS = {
    "GlmkitError": "glmkit.glm4.errors", "VerificationError": "glmkit.glm4.errors",
    "FAMILIES": "glmkit.glm4.families", "Family": "glmkit.glm4.families", "detect": "glmkit.glm4.families",
    "detect_dir": "glmkit.sources.checkpoint", "open_checkpoint": "glmkit.sources.checkpoint",
    "Source": "glmkit.sources.source", "open_source": "glmkit.sources.source", "resolve": "glmkit.sources.source",
    "transformers_dir": "glmkit.sources.source",
    "to_hf": "hf", "to_openvino": "openvino", "to_gguf": "gguf",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = _EXPORTS[name]
        return getattr(importlib.import_module(module if "." in module else f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
