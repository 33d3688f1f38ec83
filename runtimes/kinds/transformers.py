"""A transformers checkpoint (a directory, a Hugging Face id, `synthetic:…`, an embedded name): the PyTorch
reference. It claims whatever no other kind does; the source layer says clearly when it is nothing at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glmkit.glm4.errors import REFERENCE_STACK, require

from ..reference import TransformersRuntime
from .base import ArtifactKind


def tokenizer_json_ids(path, texts: list[str]) -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


class TransformersSource(ArtifactKind):
    name = "transformers"
    backend = "transformers"
    label = "a transformers checkpoint"
    capabilities = TransformersRuntime.capabilities

    def claims(self, path: Path) -> bool:
        return True

    def open(self, model: str, device: str = "CPU", **options):
        from glmkit.sources.source import transformers_dir

        require(REFERENCE_STACK, f"{model}: running a checkpoint (not an OpenVINO IR or a GGUF)")
        return TransformersRuntime(transformers_dir(model), model_name=str(model), **options)

    def logits(self, model, ids, kv_cache=None, pixels=None) -> np.ndarray:
        import torch
        from transformers import AutoModelForCausalLM

        from glmkit.sources.source import transformers_dir

        self.no_image(pixels)
        path = transformers_dir(str(model))
        net = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, trust_remote_code=False)
        with torch.no_grad():
            out = net(torch.tensor([ids])).logits[0].numpy()
        del net
        return out

    def token_ids(self, model, texts):
        from glmkit.sources.source import transformers_dir

        return tokenizer_json_ids(transformers_dir(str(model)), texts)

    def weight_bytes(self, model, runtime=None) -> int:
        """The weights the reference holds in memory (a runtime of it is needed: they are not in a file format
        glmkit reads without loading)."""
        if runtime is None:
            raise ValueError("a transformers checkpoint's weight bytes are read from its loaded runtime")
        net = runtime.model
        tied = bool(getattr(net.config, "tie_word_embeddings", False))
        embed = net.get_input_embeddings().weight
        return sum(p.numel() * p.element_size() for p in net.parameters() if tied or p is not embed)
