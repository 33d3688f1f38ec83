"""Write a safetensors checkpoint shard by shard, so memory holds one shard, never the whole model."""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_SHARD_BYTES = 1 << 30


class ShardWriter:
    """Collect tensors; flush a `model-XXXXX-of-YYYYY.safetensors` shard whenever the next one would overflow."""

    def __init__(self, out_dir: str | Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.out_dir = Path(out_dir)
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict = {}
        self._pending_bytes = 0
        self._shards: list[list[str]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        from safetensors.torch import save_file

        idx = len(self._shards)
        save_file(self._pending, self.out_dir / f"shard-{idx:05d}.tmp", metadata={"format": "pt"})
        self._shards.append(list(self._pending))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[Path]:
        """Flush the last shard, give shards their final names and write the index when there are several."""
        if self._pending or not self._shards:
            self._flush()
        n = len(self._shards)
        if n == 1:
            final = [self.out_dir / "model.safetensors"]
        else:
            final = [self.out_dir / f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        for i, path in enumerate(final):
            (self.out_dir / f"shard-{i:05d}.tmp").rename(path)
        if n > 1:
            weight_map = {name: final[i].name for i, names in enumerate(self._shards) for name in names}
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
            (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return final
