"""What both OpenVINO exports (text, GLM-4V) do to an IR after optimum-intel has written it: count its weights'
precisions, put the rope frequencies back in f32, and write GLM-4's stop tokens into generation_config.json."""

from __future__ import annotations

import json
from pathlib import Path

from glmkit.glm4 import families


def ir_weight_precisions(xml: Path) -> dict[str, int]:
    """Number of weights stored in each element type in the IR (constants of 1024+ elements)."""
    import openvino as ov

    counts: dict[str, int] = {}
    for op in ov.Core().read_model(xml).get_ops():
        if op.get_type_name() != "Constant":
            continue
        n = 1
        for d in op.get_output_shape(0):
            n *= d
        if n >= 1024:
            et = op.get_element_type().get_type_name()
            counts[et] = counts.get(et, 0) + n
    return dict(sorted(counts.items()))


def rope_frequencies_in_f32(out: Path, source_dir: Path, xml_name: str = "openvino_model.xml") -> None:
    """An fp16 IR stores every float constant in f16, the rotary inverse frequencies too: their rounding error is
    multiplied by the position, so rope angles drift as the context grows (KL 2e-3 against transformers at
    positions 1,024–1,800 of glm4-tiny; OpenVINO's own fix, openvinotoolkit/openvino PR 35674, is not released).
    Put them back in f32, as transformers' own rope initialisation computes them (YaRN included)."""
    import numpy as np
    import openvino as ov
    import torch
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = AutoConfig.from_pretrained(str(source_dir), trust_remote_code=False)
    scaling = getattr(cfg, "rope_scaling", None) or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))  # as Glm4RotaryEmbedding reads it
    inv_freq = ROPE_INIT_FUNCTIONS[rope_type](cfg, torch.device("cpu"))[0].numpy().astype(np.float32)
    xml = out / xml_name
    model = ov.Core().read_model(xml)
    found = 0
    for op in model.get_ops():
        if op.get_type_name() != "Constant" or "rotary_emb" not in op.get_friendly_name():
            continue
        if op.get_element_type() != ov.Type.f16 or list(op.get_output_shape(0))[-2:] != [inv_freq.size, 1]:
            continue
        if not np.allclose(op.get_data().astype(np.float32).reshape(-1), inv_freq, rtol=2e-3):
            continue  # not the frequencies: leave it
        exact = ov.op.Constant(inv_freq.reshape(list(op.get_output_shape(0))))
        for target in op.output(0).get_target_inputs():
            target.replace_source_output(exact.output(0))
        found += 1
    if found:
        staged = out / "rope-f32"
        ov.save_model(model, staged / xml_name, compress_to_fp16=False)
        del model
        for f in (xml_name, xml.with_suffix(".bin").name):
            (staged / f).replace(out / f)
        staged.rmdir()


def write_generation_config(out: Path, source_dir: Path, fmt: families.ChatFormat) -> None:
    """GLM-4's three stop tokens must be in generation_config.json: LLMPipeline stops on nothing else."""
    from glmkit.sources.tokenizer import added_token_ids

    ids = added_token_ids(source_dir / "tokenizer.json")
    path = out / "generation_config.json"
    gen = json.loads(path.read_text()) if path.is_file() else {}
    gen.update({k: v for k, v in families.generation_config(ids, fmt).items() if k in ("eos_token_id", "pad_token_id")})
    path.write_text(json.dumps(gen, indent=2) + "\n")
