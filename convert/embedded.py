"""Models glmkit carries or makes itself, so nothing has to be downloaded.

- `glm4-tiny`: a small glm4-format model trained by scripts/train_glm4_tiny.py, shipped as package data.
- `synthetic:<family>:<shape>`: seeded random checkpoints (see synthetic.py), made once into glmkit's cache.
"""

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


def synthetic_path(spec: str, seed: int = 0, quiet: bool = False) -> Path:
    """The cached checkpoint for `spec`, written on first use (atomically, so a killed run leaves no cache)."""
    from . import atomic, manifest, synthetic
    from .source import cache_root

    family, shape = synthetic.parse(spec)
    out = cache_root() / "synthetic" / f"{family}-{shape}-seed{seed}"
    found = manifest.read(out) if out.is_dir() else None
    if found and found.get("synthetic_format_version") == synthetic.FORMAT_VERSION:
        return out
    with atomic.atomic_output(out, force=True) as tmp:
        synthetic.write(family, shape, tmp, seed=seed, quiet=quiet)
    return out
