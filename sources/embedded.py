"""The models glmkit carries, so nothing has to be downloaded: `glm4-tiny`, a small glm4-format model trained by
scripts/train_glm4_tiny.py and shipped as package data; `glm4-tiny-z1`, the same weights under GLM-Z1's chat
template (they were trained on both formats), made in glmkit's cache on first use; and `glm4-tiny-draft`, its
first layer trained on alone (the same script, --layers 1): a draft model for speculative decoding with glm4-tiny's
tokenizer; `glm4-tiny-wide`, glm4-tiny's answers at a memory-bound size (made in the cache on first use, see
widened()); and `glm4v-tiny`, a GLM-4V in GLM-4V-9B's layout that answers questions about pictures
(scripts/train_glm4v_tiny.py). (Made on demand instead: synthetic.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

from glmkit.glm4.errors import GlmkitError

DATA = Path(__file__).parent / "data"
NAMES = ("glm4-tiny", "glm4-tiny-z1", "glm4-tiny-draft", "glm4-tiny-wide", "glm4v-tiny")
GLM4_TINY_VOCAB = 3072          # 3058 BPE tokens + 14 special tokens, padded like GLM-4 (to a multiple of 128)
GLM4_TINY_REGULAR = GLM4_TINY_VOCAB - 14


def glm4_tiny_path() -> Path:
    return DATA / "glm4-tiny"


def path(name: str) -> Path:
    p = DATA / name if name in ("glm4-tiny-draft", "glm4v-tiny") else glm4_tiny_path()
    if not (p / "config.json").is_file():
        raise GlmkitError(f"{name}: package data missing at {p}; reinstall glmkit (pip install -e .)")
    if name == "glm4-tiny-wide":
        return widened(p)
    return _z1(p) if name == "glm4-tiny-z1" else p


def _z1(base: Path) -> Path:
    """glm4-tiny's files with the Z1 template and the Z1 card's sampling defaults."""
    import hashlib
    import json

    from glmkit.common.atomic import atomic_output
    from glmkit.common.paths import cache_root
    from glmkit.glm4 import families

    out = cache_root() / "embedded" / "glm4-tiny-z1"
    # A retrained glm4-tiny has the same shape, so the same size: the stamp hashes the weights (7.5 MB, ~10 ms).
    weights = hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()
    stamp = json.dumps({"weights": weights, "template": families.Z1_CHAT_TEMPLATE})
    if (out / "glmkit-z1.stamp").is_file() and (out / "glmkit-z1.stamp").read_text(encoding="utf-8") == stamp:
        return out
    fmt = families.CHAT_FORMATS["z1"]
    with atomic_output(out, force=True) as tmp:
        for f in base.iterdir():
            shutil.copy2(f, tmp / f.name)
        (tmp / "chat_template.jinja").write_text(fmt.template, encoding="utf-8")
        gen = json.loads((base / "generation_config.json").read_text(encoding="utf-8"))
        (tmp / "generation_config.json").write_text(json.dumps({**gen, "do_sample": True, **fmt.sampling}, indent=2),
                                                    encoding="utf-8")
        (tmp / "glmkit-z1.stamp").write_text(stamp, encoding="utf-8")
    return out


WIDE_INTERMEDIATE = 65536  # 4 layers × 3 × 256 × 65,536: 201 M parameters, 403 MB in fp16


def widened(base: Path, intermediate: int = WIDE_INTERMEDIATE, out: Path | None = None) -> Path:
    """glm4-tiny with each MLP widened with zero weights to `intermediate`: silu(0 · x) · (0 · x) = 0 and the zero
    columns of down_proj add nothing, so it computes glm4-tiny's function (the same logits, up to the engines'
    rounding) while every token reads 200 M parameters. glm4-tiny itself is compute-bound on a CPU (a pass of 9
    tokens costs ~5× one), where speculation cannot pay; this one is memory-bound like a real GLM-4, and it copies
    its input as glm4-tiny does, so speculative decoding's speed-up is measured with real acceptance."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    from glmkit.common.atomic import atomic_output
    from glmkit.common.paths import cache_root

    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    if intermediate < config["intermediate_size"]:
        raise GlmkitError(f"intermediate {intermediate}: widen to at least {config['intermediate_size']}")
    out = out or cache_root() / "embedded" / f"glm4-tiny-wide-{intermediate}"
    stamp = (base / "model.safetensors").stat().st_size, (base / "model.safetensors").stat().st_mtime_ns
    if (out / "glmkit-wide.stamp").is_file() and (out / "glmkit-wide.stamp").read_text() == repr(stamp):
        return out
    narrow = config["intermediate_size"]
    tensors = {}
    for name, t in load_file(str(base / "model.safetensors")).items():
        if name.endswith("mlp.gate_up_proj.weight"):  # [gate; up], each [I, hidden]: zero rows after each half
            wide = t.new_zeros(2 * intermediate, t.shape[1])
            wide[:narrow], wide[intermediate:intermediate + narrow] = t[:narrow], t[narrow:]
            t = wide
        elif name.endswith("mlp.down_proj.weight"):  # [hidden, I]: zero columns
            t = torch.cat([t, t.new_zeros(t.shape[0], intermediate - narrow)], dim=1)
        tensors[name] = t.contiguous()
    with atomic_output(out, force=True) as tmp:
        for f in base.iterdir():
            if f.name not in ("model.safetensors", "config.json", "glmkit.json"):
                shutil.copy2(f, tmp / f.name)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps({**config, "intermediate_size": intermediate}, indent=2),
                                         encoding="utf-8")
        (tmp / "glmkit-wide.stamp").write_text(repr(stamp))
    return out


def held_out_text() -> str:
    """Text glm4-tiny never saw in training: its evaluation set."""
    return (glm4_tiny_path() / "heldout.txt").read_text(encoding="utf-8")
