"""Where glmkit keeps things: its cache, and the default name of a conversion's output."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """glmkit's cache (synthetic checkpoints, remapped chatglm sources, fitted tokenizers); GLMKIT_CACHE moves it."""
    return Path(os.environ.get("GLMKIT_CACHE") or Path.home() / ".cache" / "glmkit")


def default_output(spec: str, suffix: str) -> Path:
    """./NAME-SUFFIX for a SRC: `glm4-tiny` → glm4-tiny-hf, `synthetic:glm4:bench` → synthetic-glm4-bench-hf."""
    name = Path(spec.replace("synthetic:", "synthetic-").replace(":", "-").rstrip("/")).name
    return Path(f"{name}-{suffix}")
