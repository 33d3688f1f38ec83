"""GLM-4V-9B's vision tower as glmkit's own small torch module, in the published architecture (docs/glm4v.md,
"Forward"): EVA2CLIP's patch embedding and post-norm transformer, a 2×2 stride-2 conv that merges four patches,
a GLU projection into the language model's width, and the boi/eoi vectors, all divided by the scaling factor.

Parameter names are the checkpoint's (`transformer.vision.` stripped), so its tensors load as they are, with no
remote code. `openvino.convert_model` turns it into the vision IR; it is also the reference the IR is checked
against, and it is itself checked against vLLM's implementation (tests/test_vllm.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PREFIX = "transformer.vision."


class PatchEmbedding(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        self.proj = nn.Conv2d(v["in_channels"], v["hidden_size"], v["patch_size"], stride=v["patch_size"])
        self.cls_embedding = nn.Parameter(torch.zeros(1, v["hidden_size"]))
        self.position_embedding = nn.Embedding(v["num_positions"], v["hidden_size"])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.proj(pixels).flatten(2).transpose(1, 2)  # [B, patches, Hv]
        cls = self.cls_embedding.expand(x.shape[0], -1, -1)
        # the lookup goes through the module, not .weight: OpenVINO's 16-bit patch swaps .weight for a placeholder
        positions = torch.arange(x.shape[1] + 1, device=x.device)
        return torch.cat((cls, x), dim=1) + self.position_embedding(positions)[None]


class Attention(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        self.heads = v["num_heads"]
        self.query_key_value = nn.Linear(v["hidden_size"], 3 * v["hidden_size"])
        self.dense = nn.Linear(v["hidden_size"], v["hidden_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        # q, k, v are three contiguous chunks of the fused projection, each split into heads
        q, k, v = self.query_key_value(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # bidirectional, scale head_dim ** -0.5
        return self.dense(out.transpose(1, 2).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        self.fc1 = nn.Linear(v["hidden_size"], v["intermediate_size"])
        self.fc2 = nn.Linear(v["intermediate_size"], v["hidden_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact GELU (hidden_act "gelu")


class Layer(nn.Module):
    """Post-norm: each sublayer's output is normalised before the residual add."""

    def __init__(self, v: dict):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(v["hidden_size"], eps=v["layer_norm_eps"])
        self.attention = Attention(v)
        self.mlp = MLP(v)
        self.post_attention_layernorm = nn.LayerNorm(v["hidden_size"], eps=v["layer_norm_eps"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.input_layernorm(self.attention(x))
        return x + self.post_attention_layernorm(self.mlp(x))


class Transformer(nn.Module):
    def __init__(self, v: dict):
        super().__init__()
        self.layers = nn.ModuleList(Layer(v) for _ in range(v["num_hidden_layers"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class GLU(nn.Module):
    """Into the language model: linear → LayerNorm (torch's default eps, 1e-5) → GELU → SwiGLU to the text MLP's
    width → back to hidden (no biases)."""

    def __init__(self, hidden: int, ffn: int):
        super().__init__()
        self.linear_proj = nn.Linear(hidden, hidden, bias=False)
        self.norm1 = nn.LayerNorm(hidden)
        self.gate_proj = nn.Linear(hidden, ffn, bias=False)
        self.dense_h_to_4h = nn.Linear(hidden, ffn, bias=False)
        self.dense_4h_to_h = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(self.linear_proj(x)))
        return self.dense_4h_to_h(F.silu(self.gate_proj(x)) * self.dense_h_to_4h(x))


class VisionTower(nn.Module):
    """pixels [B, 3, S, S] → [B, (S/14/2)² + 2, hidden]: boi, one embedding per merged patch, eoi."""

    def __init__(self, config: dict):
        super().__init__()
        v = config["vision_config"]
        hidden = config["hidden_size"]
        self.patch_embedding = PatchEmbedding(v)
        self.transformer = Transformer(v)
        self.conv = nn.Conv2d(v["hidden_size"], hidden, kernel_size=2, stride=2)
        self.linear_proj = GLU(hidden, config["ffn_hidden_size"])
        self.boi = nn.Parameter(torch.zeros(1, 1, hidden))
        self.eoi = nn.Parameter(torch.zeros(1, 1, hidden))
        self.scaling_factor = float(v["scaling_factor"])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.transformer(self.patch_embedding(pixels))[:, 1:]  # CLS dropped
        b, n, h = x.shape
        side = int(n ** 0.5)
        x = self.conv(x.view(b, side, side, h).permute(0, 3, 1, 2))  # 2×2 patches → one
        x = self.linear_proj(x.flatten(2).transpose(1, 2))
        x = torch.cat((self.boi.expand(b, -1, -1), x, self.eoi.expand(b, -1, -1)), dim=1)
        return x / self.scaling_factor


def load(ckpt, dtype=torch.float32) -> VisionTower:
    """The vision tower of a GLM-4V checkpoint (checkpoint.Checkpoint), its weights read from the safetensors."""
    from glmkit.glm4.errors import GlmkitError

    with torch.device("meta"):
        tower = VisionTower(ckpt.config)
    state = {name[len(PREFIX):]: t.to(dtype) for name, t in ckpt.tensors(keep=lambda n: n.startswith(PREFIX))}
    want = tower.state_dict().keys()
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise GlmkitError(f"{ckpt.path}: the vision tower's tensors do not match GLM-4V's layout (missing "
                          f"{missing[:3]}, unexpected {extra[:3]}); is it a glm-4v-9b checkpoint?")
    tower.load_state_dict(state, assign=True)
    return tower.eval()
