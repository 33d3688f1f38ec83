"""The source model run one decoder block at a time, straight from its memory-mapped safetensors.

What calibration and verification need of the source — the input of every Linear layer, the logits at the end —
without the whole fp32 model in memory: a block is built by transformers' own decoder-layer class, filled with its
tensors (in fp32), run over every token chunk, and dropped before the next. Peak memory is one block, the hidden
states of the chunks and the embedding rows they use, so it does not grow with depth: GLM-4-32B's 61 blocks cost
what one does (~2 GB in fp32). Each chunk is a sequence of its own, from position 0, as llama-imatrix evaluates.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glmkit.glm4.errors import GlmkitError

if TYPE_CHECKING:
    import torch

# (name of a Linear input as the hook sees it, [tokens, columns] float32) → None
InputHook = Callable[[str, np.ndarray], None]
# (block index, the filled layer, its input hidden states per chunk, rotary (cos, sin) of a chunk) → its outputs
BlockRun = Callable[[int, "torch.nn.Module", list["torch.Tensor"], Callable], list["torch.Tensor"]]
HEAD_ROWS = 16384  # lm_head rows multiplied at a time


class _Tensors:
    """Tensors of a native (glm / glm4) checkpoint by name, read on demand (memory-mapped, or generated)."""

    def __init__(self, path: Path):
        from glmkit.sources.checkpoint import open_checkpoint

        self.ckpt = open_checkpoint(path)
        if not self.ckpt.family.native:
            raise GlmkitError(f"{path}: block-wise runs take the glm/glm4 layout; remap {self.ckpt.family.name} "
                              "first (--to hf)")
        self.names = list(self.ckpt.tensor_index())

    def get(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        return self.ckpt.tensor(name, rows)

    def rows(self, name: str, ids: np.ndarray) -> torch.Tensor:
        """Rows `ids` (sorted) of a 2-D tensor, read in runs of consecutive ids: never the whole table."""
        import torch

        runs, start = [], 0
        for k in range(1, len(ids) + 1):
            if k == len(ids) or ids[k] != ids[k - 1] + 1:
                runs.append(self.get(name, (int(ids[start]), int(ids[k - 1]) + 1)))
                start = k
        return torch.cat(runs)

    def prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        return {n[len(prefix):]: self.get(n) for n in self.names if n.startswith(prefix)}


def _model_parts(config: dict):
    """transformers' own classes for this config: (config object, decoder-layer class, rotary, norm class)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**{k: v for k, v in config.items() if k not in ("transformers_version",)})
    cfg._attn_implementation = "sdpa"
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    inner = skeleton.model
    rotary = type(inner.rotary_emb)(config=cfg)  # inv_freq computed on the CPU, as the model computes it
    return cfg, type(inner.layers[0]), rotary, type(inner.norm)


def run(model_dir: str | Path, chunks: list[list[int]], *, on_input: InputHook | None = None,
        logits: bool = False, progress: Callable[[int], None] | None = None,
        on_block: BlockRun | None = None) -> list[np.ndarray] | None:
    """Run `chunks` (each a sequence from position 0) through the model in `model_dir` block by block, in fp32.
    on_input(hf_linear_name, x) sees the input of every decoder-block Linear (`model.layers.3.mlp.down_proj`);
    logits=True returns each chunk's [len, vocab] float32 logits. progress(1) after each block. on_block, when
    given, runs each block instead (and its outputs feed the next): calibration that quantizes as it goes."""
    import json

    import torch

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    tensors = _Tensors(model_dir)
    cfg, layer_cls, rotary, norm_cls = _model_parts(config)
    lengths = [len(c) for c in chunks]
    flat = np.concatenate([np.asarray(c, dtype=np.int64) for c in chunks])
    uniq, inverse = np.unique(flat, return_inverse=True)
    table = tensors.rows("model.embed_tokens.weight", uniq).to(torch.float32)
    hidden = list(torch.split(table[torch.from_numpy(inverse)], lengths))
    del table
    with torch.no_grad():
        for i in range(cfg.num_hidden_layers):
            with torch.device("meta"):  # no initialisation: every parameter comes from the checkpoint
                layer = layer_cls(cfg, i)
            state = {k: v.to(torch.float32) for k, v in tensors.prefixed(f"model.layers.{i}.").items()}
            missing, unexpected = layer.load_state_dict(state, strict=False, assign=True)
            if missing or unexpected:
                raise GlmkitError(f"{model_dir}: block {i} does not match transformers' {layer_cls.__name__} "
                                  f"(missing {missing[:2]}, unexpected {unexpected[:2]})")
            del state
            layer.eval()
            handles = []
            if on_input is not None:
                for name, mod in layer.named_modules():
                    if isinstance(mod, torch.nn.Linear):
                        full = f"model.layers.{i}.{name}"
                        handles.append(mod.register_forward_pre_hook(
                            lambda m, args, full=full: on_input(full, args[0].reshape(-1, args[0].shape[-1])
                                                                .numpy())))
            def rope(h):
                return rotary(h[None], torch.arange(h.shape[0])[None])

            if on_block is not None:
                hidden = on_block(i, layer, hidden, rope)
            for c, h in enumerate(hidden if on_block is None else []):
                out = layer(h[None], attention_mask=None, position_embeddings=rope(h), use_cache=False)
                hidden[c] = (out[0] if isinstance(out, tuple) else out)[0]
            for handle in handles:
                handle.remove()
            del layer
            if progress:
                progress(1)
        if not logits:
            return None
        norm = norm_cls(cfg.hidden_size, eps=cfg.rms_norm_eps)
        norm.load_state_dict({"weight": tensors.get("model.norm.weight").to(torch.float32)})
        head = "lm_head.weight" if "lm_head.weight" in tensors.names else "model.embed_tokens.weight"  # tied
        xs = [norm(h) for h in hidden]
        parts: list[list[torch.Tensor]] = [[] for _ in xs]
        for a in range(0, cfg.vocab_size, HEAD_ROWS):  # the head in slices: never whole in fp32
            w = tensors.get(head, (a, min(a + HEAD_ROWS, cfg.vocab_size))).to(torch.float32)
            for p, x in zip(parts, xs):
                p.append(x @ w.T)
        return [torch.cat(p, dim=-1).numpy() for p in parts]
