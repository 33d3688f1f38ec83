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


def file_identity(path: str | Path) -> dict:
    """Size and a hash of the first and last MiB: ties a sidecar manifest to one version of a multi-GB file without
    reading it whole (a GGUF's header and tensor layout are at its start, its last tensor at its end)."""
    import hashlib

    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return {"size": size, "sha256_ends": h.hexdigest()}


def read(target: str | Path) -> dict | None:
    """The manifest of an output directory, or of a single-file output (its NAME.glmkit.json sidecar). A sidecar
    that names another version of the file (a run killed between writing the two) counts as none."""
    target = Path(target)
    path = target / MANIFEST if target.is_dir() else target.with_name(target.name + ".glmkit.json")
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if target.is_file() and data.get("file_identity") and data["file_identity"] != file_identity(target):
        return None
    return data
