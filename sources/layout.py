"""The tensor layout of a glm/glm4 checkpoint: which tensors, of which shapes, a config implies.

Read off transformers' own model classes (built on the meta device, no memory), so the table is transformers' and
never drifts from what `from_pretrained` will load.
"""

from __future__ import annotations


def expected_tensors(config: dict) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a glm/glm4 config, in transformers' state_dict order."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
