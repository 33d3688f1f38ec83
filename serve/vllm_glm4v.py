"""GLM-4V-9B on vLLM with the original's image positions: glmkit's model, registered through vLLM's plugin system.

vLLM's own GLM4VForCausalLM gives an image's 1,602 embeddings 1,602 consecutive positions; the original gives every
patch one shared position, so the text after an image continues as if the image were 3 tokens long
(glm4/vision.py). This model is vLLM's, with two changes: positions computed as the original computes them, fed
through vLLM's M-RoPE channel (its only route to positions that are not the token's index — the three channels
carry the same numbers and the language model reads one), and pixels prepared by transformers' PIL image
processor (vLLM's needs torchvision).

vLLM loads `register` from the `vllm.general_plugins` entry point in every process it starts; a directory written
by `glm-convert SRC --to hf` names this architecture in its config.json, so `vllm serve DIR` runs it (glm-vllm
prints the command). Imported by vLLM only; glmkit itself never imports this module.
"""

from __future__ import annotations

import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling
from vllm.model_executor.models.glm4v import (
    GLM4VDummyInputsBuilder,
    GLM4VForCausalLM,
    GLM4VMultiModalProcessor,
    GLM4VProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from glmkit.glm4 import vision


def register() -> None:
    """The `vllm.general_plugins` entry point: glmkit's GLM-4V under glm4/vision.py's architecture name."""
    from vllm import ModelRegistry

    if vision.VLLM_ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(vision.VLLM_ARCHITECTURE, f"{__name__}:GlmkitGLM4VForCausalLM")


class PilImageProcessor(PilBackend):
    """The original's pixel preparation (vision.preprocess): RGB, bicubic resize to the square, CLIP's mean/std."""

    resample = PILImageResampling.BICUBIC
    image_mean = list(vision.MEAN)
    image_std = list(vision.STD)
    do_resize = do_rescale = do_normalize = do_convert_rgb = True


class ProcessingInfo(GLM4VProcessingInfo):
    def get_image_processor(self, **kwargs):
        size = self.get_hf_config().vision_config["image_size"]
        kwargs = self.ctx.get_merged_mm_kwargs(kwargs)
        kwargs.setdefault("size", {"width": size, "height": size})
        return PilImageProcessor(**kwargs)


@MULTIMODAL_REGISTRY.register_processor(GLM4VMultiModalProcessor, info=ProcessingInfo,
                                        dummy_inputs=GLM4VDummyInputsBuilder)
class GlmkitGLM4VForCausalLM(GLM4VForCausalLM):
    def get_mrope_input_positions(self, input_tokens: list[int], mm_features) -> tuple[torch.Tensor, int]:
        """Positions of the expanded prompt (an image is its 1,602 placeholders here) as the original gives them,
        in each of the three channels, and the offset decoding continues with: the prompt's length with the image
        counted as its 3 marker tokens."""
        n = len(input_tokens)
        if not mm_features:
            return torch.arange(n).expand(3, -1).clone(), 0
        (image,) = mm_features  # one image per prompt (GLM4VProcessingInfo's limit, as the original asserts)
        embeddings = image.mm_position.length
        length = n - embeddings + vision.MARKER_TOKENS
        pos = vision.image_positions(image.mm_position.offset, length, embeddings)
        return torch.tensor(pos).expand(3, -1).clone(), length - n

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None, **kwargs):
        if positions.ndim == 2:  # the M-RoPE channels, all equal: GLM-4's rotary takes one row
            positions = positions[0]
        return super().forward(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)
