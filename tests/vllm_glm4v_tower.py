"""Run by vLLM's venv (tests/test_vllm.py): GLM-4V's vision features from vLLM's own implementation
(vllm.model_executor.models.glm4v.EVA2CLIPModel), for a checkpoint's weights and given pixel values.

    python vllm_glm4v_tower.py CHECKPOINT_DIR PIXELS.npy OUT.npy

The pixels come from glmkit (vLLM's processor needs torchvision, which does not load beside this torch); the
tensors are read from the checkpoint's safetensors by their published names.
"""

import json
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors.torch import load_file


def main(checkpoint: str, pixels: str, out: str) -> None:
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.model_executor.models.glm4v import EVA2CLIPModel

    config = json.loads((Path(checkpoint) / "config.json").read_text())
    weights = {}
    for f in sorted(Path(checkpoint).glob("*.safetensors")):
        weights.update({k[len("transformer.vision."):]: v for k, v in load_file(str(f)).items()
                        if k.startswith("transformer.vision.")})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with set_current_vllm_config(VllmConfig()):
        init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                     distributed_init_method=f"tcp://127.0.0.1:{port}")
        initialize_model_parallel(1, 1)
        model = EVA2CLIPModel(SimpleNamespace(**config), quant_config=None, prefix="vision").float().eval()
        for name, param in model.named_parameters():
            if name.endswith("merged_proj.weight"):  # vLLM stacks gate_proj and dense_h_to_4h
                base = name[:-len("merged_proj.weight")]
                t = torch.cat([weights.pop(base + "gate_proj.weight"), weights.pop(base + "dense_h_to_4h.weight")])
            else:
                t = weights.pop(name)
            assert param.shape == t.shape, (name, param.shape, t.shape)
            param.data.copy_(t)
        assert not weights, f"not loaded: {sorted(weights)}"
        for module in model.modules():  # what vLLM's loader does next (on CPU: picks each linear's kernel)
            if getattr(module, "quant_method", None) is not None:
                module.quant_method.process_weights_after_loading(module)
        with torch.no_grad():
            features = model(torch.from_numpy(np.load(pixels)).float())
    np.save(out, features.numpy())


if __name__ == "__main__":
    main(*sys.argv[1:])
