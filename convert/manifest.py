"""`glmkit.json`: what an artifact was made from and how, written beside every output glmkit makes."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

MANIFEST = "glmkit.json"
SCHEMA_VERSION = 1
TOOLS = ("glmkit", "torch", "transformers", "tokenizers", "safetensors", "optimum-intel", "openvino", "nncf", "gguf")


def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def write(directory: str | Path, data: dict) -> Path:
    return write_file(Path(directory) / MANIFEST, data)


def write_file(path: str | Path, data: dict) -> Path:
    from .atomic import write_text

    body = {"schema_version": SCHEMA_VERSION, **data, "tools": tool_versions()}
    return write_text(path, json.dumps(body, indent=2, default=str) + "\n")


def read(target: str | Path) -> dict | None:
    """The manifest of an output directory, or of a single-file output (its NAME.glmkit.json sidecar)."""
    target = Path(target)
    path = target / MANIFEST if target.is_dir() else target.with_name(target.name + ".glmkit.json")
    if not path.is_file():
        return None
    return json.loads(path.read_text())
