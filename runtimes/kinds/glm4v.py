"""A GLM-4V OpenVINO IR directory: the vision tower, the text embeddings and the language model as three IRs,
run by glmkit's own driver of OpenVINO (runtimes/glm4v.py; openvino-genai has no pipeline that takes it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glmkit.glm4.errors import GlmkitError

from ..glm4v import FILES, Glm4vIR, Glm4vRuntime
from .base import ArtifactKind
from .openvino import EXACT, ir_token_ids, ir_weight_bytes


class OpenVINOGlm4v(ArtifactKind):
    name = "openvino-glm4v"
    backend = "openvino"
    label = "a GLM-4V model"
    capabilities = Glm4vRuntime.capabilities

    def claims(self, path: Path) -> bool:
        return path.is_dir() and (path / FILES[2]).is_file()

    def check(self, model: str) -> None:
        missing = [f for f in FILES if not (Path(model) / f).is_file()]
        if missing:
            raise GlmkitError(f"{model}: not a GLM-4V IR (no {', '.join(missing)}); convert the checkpoint with "
                              "glm-convert SRC --to openvino")

    def open(self, model: str, device: str = "CPU", **options):
        return Glm4vRuntime(model, device=device, model_name=str(model), **options)

    def logits(self, model, ids, kv_cache=None, pixels=None) -> np.ndarray:
        """[expanded length, vocab]: with `pixels`, the image's features take its marker's place, so rows follow
        the spliced prompt (1,600 embeddings at the 9B shape where the marker had 3 tokens)."""
        if kv_cache:
            raise GlmkitError("a GLM-4V IR's logits are measured with an f32 KV cache only; drop kv_cache")
        ir = Glm4vIR(model, properties={**EXACT, "KV_CACHE_PRECISION": "f32"})  # later passes read the KV
        embeds, positions = ir.splice(ids, ir.image_features(pixels) if pixels is not None else None)
        ir.reset()
        return np.array(ir.forward(embeds, positions), dtype=np.float32)

    def token_ids(self, model, texts):
        return ir_token_ids(model, texts)

    def weight_bytes(self, model, runtime=None) -> int:
        return ir_weight_bytes(Path(model) / FILES[2])
