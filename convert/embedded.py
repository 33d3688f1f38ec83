"""The models glmkit carries, so nothing has to be downloaded: `glm4-tiny`, a small glm4-format model trained by
scripts/train_glm4_tiny.py and shipped as package data; `glm4-tiny-z1`, the same weights under GLM-Z1's chat
template (they were trained on both formats), made in glmkit's cache on first use; and `glm4-tiny-draft`, its
first layer trained on alone (the same script, --layers 1): a draft model for speculative decoding with glm4-tiny's
tokenizer. (Made on demand instead: synthetic.py.)"""

from __future__ import annotations

from pathlib import Path

from glmkit.glm4.errors import GlmkitError

DATA = Path(__file__).parent / "data"
NAMES = ("glm4-tiny", "glm4-tiny-z1", "glm4-tiny-draft")
GLM4_TINY_VOCAB = 3072          # 3058 BPE tokens + 14 special tokens, padded like GLM-4 (to a multiple of 128)
GLM4_TINY_REGULAR = GLM4_TINY_VOCAB - 14


def glm4_tiny_path() -> Path:
    return DATA / "glm4-tiny"


def path(name: str) -> Path:
    p = DATA / "glm4-tiny-draft" if name == "glm4-tiny-draft" else glm4_tiny_path()
    if not (p / "config.json").is_file():
        raise GlmkitError(f"{name}: package data missing at {p}; reinstall glmkit (pip install -e .)")
    return _z1(p) if name == "glm4-tiny-z1" else p


def _z1(base: Path) -> Path:
    """glm4-tiny's files with the Z1 template and the Z1 card's sampling defaults."""
    import hashlib
    import json
    import shutil

    from glmkit.glm4 import families

    from .atomic import atomic_output
    from .paths import cache_root

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


def held_out_text() -> str:
    """Text glm4-tiny never saw in training: its evaluation set."""
    return (glm4_tiny_path() / "heldout.txt").read_text(encoding="utf-8")
