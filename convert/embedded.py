"""The model glmkit carries, so nothing has to be downloaded: `glm4-tiny`, a small glm4-format model trained by
scripts/train_glm4_tiny.py and shipped as package data. (Made on demand instead: synthetic.py.)"""

from __future__ import annotations

from pathlib import Path

from .errors import GlmkitError

DATA = Path(__file__).parent / "data"
NAMES = ("glm4-tiny",)
GLM4_TINY_VOCAB = 3072          # 3058 BPE tokens + 14 special tokens, padded like GLM-4 (to a multiple of 128)
GLM4_TINY_REGULAR = GLM4_TINY_VOCAB - 14


def glm4_tiny_path() -> Path:
    return DATA / "glm4-tiny"


def path(name: str) -> Path:
    p = glm4_tiny_path()
    if not (p / "config.json").is_file():
        raise GlmkitError(f"{name}: package data missing at {p}; reinstall glmkit (pip install -e .)")
    return p


def held_out_text() -> str:
    """Text glm4-tiny never saw in training: its evaluation set."""
    return (glm4_tiny_path() / "heldout.txt").read_text(encoding="utf-8")
