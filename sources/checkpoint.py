"""A local checkpoint directory: validated up front, tensors read lazily one at a time.

Validation happens before anything is written, so bad input never leaves a half-made output behind.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from glmkit.glm4 import families
from glmkit.glm4.errors import GlmkitError

if TYPE_CHECKING:
    import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
PICKLE_GLOBS = ("pytorch_model*.bin", "*.pt", "*.pth")


@dataclass
class Checkpoint:
    path: Path
    config: dict
    family: families.Family
    weight_files: list[Path]
    pickled: bool  # weights are torch pickles (read only with allow_pickle)
    _index: dict[str, Path] | None = field(default=None, repr=False)
    _handles: dict = field(default_factory=dict, repr=False)

    @property
    def tokenizer_file(self) -> Path:
        for name in TOKENIZER_FILES:
            if (self.path / name).is_file():
                return self.path / name
        raise AssertionError("validated at open")

    def tensor_index(self) -> dict[str, Path]:
        """Tensor name → file holding it, from the safetensors headers (no data read)."""
        index: dict[str, Path] = {}
        for f in self.weight_files:
            if self.pickled:
                raise GlmkitError("tensor_index needs safetensors weights")
            for name in safetensors_header(f):
                index[name] = f
        return index

    def tensors(self, keep: Callable[[str], bool] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, tensor) one at a time, file by file and by name within a file (the order every consumer
        plans with); safetensors files are memory-mapped, never read whole. `keep`: read only the names it
        accepts (GLM-4V's language part or its tower: the other is never read)."""
        import torch
        from safetensors import safe_open

        for f in self.weight_files:
            if self.pickled:
                # weights_only=True: even with --allow-pickle, refuse pickles that carry code.
                items = torch.load(f, map_location="cpu", weights_only=True, mmap=True).items()
                yield from ((n, t) for n, t in items if keep is None or keep(n))
                continue
            with safe_open(f, framework="pt") as sf:
                for name in sorted(sf.keys()):
                    if keep is None or keep(name):
                        yield name, sf.get_tensor(name)

    def tensor_meta(self) -> Iterator[tuple[str, tuple[int, ...], str]]:
        """(name, shape, safetensors dtype) of every tensor in the order `tensors()` yields them; no data read."""
        if self.pickled:
            raise GlmkitError("tensor_meta needs safetensors weights")
        for f in self.weight_files:
            for n, m in sorted(safetensors_header(f).items()):
                yield n, tuple(m["shape"]), m["dtype"]

    def tensor(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """One tensor by name (rows [a, b) of it only, when given), from the memory-mapped file."""
        from safetensors import safe_open

        if self._index is None:
            self._index = self.tensor_index()
        f = self._index.get(name)
        if f is None:
            raise GlmkitError(f"{self.path}: no tensor {name}; the checkpoint is incomplete")
        if f not in self._handles:  # kept open (memory-mapped): many small reads of one file stay cheap
            self._handles[f] = safe_open(f, framework="pt")
        sf = self._handles[f]
        return sf.get_tensor(name) if rows is None else sf.get_slice(name)[rows[0]:rows[1]]

    def fingerprint(self) -> str:
        """sha256 of each weight file's name, size and first MiB (the safetensors header): identifies the weights
        without reading gigabytes."""
        import hashlib

        h = hashlib.sha256()
        for f in self.weight_files:
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
        return h.hexdigest()

    def num_parameters(self) -> int:
        if self.pickled:
            return sum(t.numel() for _, t in self.tensors())
        total = 0
        for f in self.weight_files:
            for meta in safetensors_header(f).values():
                n = 1
                for d in meta["shape"]:
                    n *= d
                total += n
        return total


@dataclass
class LazyCheckpoint(Checkpoint):
    """A synthetic checkpoint whose tensors are generated when read (lazy.py): no weight files at all."""

    generated = True
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    seed: int = 0
    dtype: str = "bfloat16"

    @classmethod
    def open(cls, path: Path, config: dict, family) -> LazyCheckpoint:
        from glmkit.common import manifest

        from .layout import expected_tensors

        if not family.native:
            raise GlmkitError(f"{path}: generated-on-read weights come in the glm/glm4 layouts only")
        m = manifest.read(path) or {}
        return cls(path=path, config=config, family=family, weight_files=[], pickled=False,
                   shapes={n: tuple(s) for n, s in expected_tensors(config).items()}, seed=int(m.get("seed", 0)),
                   dtype=config.get("torch_dtype") or config.get("dtype") or "bfloat16")

    def _torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    def tensor_index(self) -> dict[str, Path]:
        return {n: self.path for n in self.shapes}

    def tensor_meta(self) -> Iterator[tuple[str, tuple[int, ...], str]]:
        st = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}[self.dtype]
        for n in sorted(self.shapes):
            yield n, self.shapes[n], st

    def tensor(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        if name not in self.shapes:
            raise GlmkitError(f"{self.path}: no tensor {name} in this synthetic checkpoint")
        from .lazy import seeded_rows

        return seeded_rows(name, self.shapes[name], self.seed, self._torch_dtype(), rows)

    def tensors(self, keep: Callable[[str], bool] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        for n in sorted(self.shapes):
            if keep is None or keep(n):
                yield n, self.tensor(n)

    def num_parameters(self) -> int:
        total = 0
        for s in self.shapes.values():
            n = 1
            for d in s:
                n *= d
            total += n
        return total

    def fingerprint(self) -> str:
        import hashlib

        from .lazy import ROWS_PER_SEED

        h = hashlib.sha256(json.dumps({"config": self.config, "seed": self.seed, "rows": ROWS_PER_SEED},
                                      sort_keys=True).encode())
        return h.hexdigest()


def safetensors_header(path: Path) -> dict:
    """Tensor entries of a safetensors file's header; a GlmkitError if the file is truncated or corrupt."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(n))
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        end = max((v["data_offsets"][1] for v in entries.values()), default=0)
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise GlmkitError(f"{path}: corrupt safetensors header ({e}); re-download or re-create this file") from None
    if 8 + n + end != size:
        raise GlmkitError(f"{path}: truncated or corrupt ({size} bytes, header promises {8 + n + end}); "
                          "re-download or re-create this file")
    return entries


def _weight_files(path: Path, allow_pickle: bool) -> tuple[list[Path], bool]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise GlmkitError(f"{index}: corrupt index ({e}); re-download the checkpoint") from None
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise GlmkitError(f"{path}: shards listed in model.safetensors.index.json are missing: "
                              f"{', '.join(missing)}; finish the download")
        return [path / n for n in names], False
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files, False
    pickles = sorted(p for g in PICKLE_GLOBS for p in path.glob(g))
    if pickles:
        if not allow_pickle:
            raise GlmkitError(f"{path}: weights are pickle files ({pickles[0].name}), which can execute code when "
                              "loaded; pass --allow-pickle if you trust their source")
        return pickles, True
    raise GlmkitError(f"{path}: no weights (*.safetensors) found; point glmkit at a complete checkpoint")


def read_config(path: str | Path) -> dict:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        raise GlmkitError(f"{path}: no config.json — point glmkit at a checkpoint directory (config.json, "
                          "tokenizer and *.safetensors)")
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GlmkitError(f"{cfg}: not valid JSON ({e}); re-download or re-create the checkpoint") from None


def detect_dir(path: str | Path) -> families.Family:
    """The GLM-4 family of a checkpoint directory, from its config.json."""
    return families.detect(read_config(path), where=str(Path(path) / "config.json"))


def open_checkpoint(path: str | Path, allow_pickle: bool = False) -> Checkpoint:
    """Validate a checkpoint directory: config, family, tokenizer, weights (headers and sizes)."""
    path = Path(path)
    if not path.exists():
        raise GlmkitError(f"{path}: no such file or directory; give a checkpoint directory, a Hugging Face id, "
                          "glm4-tiny or synthetic:<family>:<shape>")
    if not path.is_dir():
        raise GlmkitError(f"{path}: not a directory; give the checkpoint directory that holds config.json")
    config = read_config(path)
    family = families.detect(config, where=str(path / "config.json"))
    if not any((path / n).is_file() for n in TOKENIZER_FILES):
        raise GlmkitError(f"{path}: no tokenizer ({' or '.join(TOKENIZER_FILES)}); copy the tokenizer files from "
                          "the original checkpoint")
    from glmkit.common import manifest

    if (manifest.read(path) or {}).get("lazy_weights"):  # synthetic weights generated when read (lazy.py)
        return LazyCheckpoint.open(path, config, family)
    files, pickled = _weight_files(path, allow_pickle)
    if not pickled:
        for f in files:
            safetensors_header(f)
    return Checkpoint(path=path, config=config, family=family, weight_files=files, pickled=pickled)
