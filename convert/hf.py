"""`--to hf`: any supported source as a transformers-native safetensors checkpoint.

glm4 and glm sources are re-sharded as they are; the original chatglm format is remapped natively (remap.py), so
no remote code is executed, now or when the result is loaded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import families, manifest, preflight, progress, verify
from .atomic import atomic_output, check_output
from .paths import default_output
from .remap import write_checkpoint
from .source import open_source


def to_hf(src: str, output: str | Path | None = None, *, force: bool = False, allow_pickle: bool = False,
          revision: str | None = None, quiet: bool = False, max_shard_bytes: int | None = None,
          rope_scaling: str | None = None) -> Path:
    """Write SRC as a transformers-native checkpoint at `output` (default ./NAME-hf); returns the path.
    rope_scaling "yarn:FACTOR" writes transformers' YaRN into config.json."""
    if rope_scaling:  # a bad spec fails before any work
        families.with_yarn({"max_position_embeddings": 1}, rope_scaling)
    out = check_output(output or default_output(src, "hf"), force)
    t0 = time.perf_counter()
    source, ckpt = open_source(src, revision=revision, allow_pickle=allow_pickle, quiet=quiet)
    preflight.check_disk({out: sum(f.stat().st_size for f in ckpt.weight_files)}, "writing the checkpoint")
    with atomic_output(out, force=force) as tmp:
        config = write_checkpoint(ckpt, tmp, quiet=quiet, max_shard_bytes=max_shard_bytes)
        if rope_scaling:
            config = families.with_yarn(config, rope_scaling)
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        tokens = verify.tokenization(ckpt.path, tmp)  # chatglm: against tiktoken itself on tokenizer.model
        progress.say(verify.tokenization_summary(tokens), quiet)
        manifest.write(tmp, {"kind": "hf", "source": source.describe(), "family": ckpt.family.name,
                             "output_family": "glm" if ckpt.family.name == "chatglm" else ckpt.family.name,
                             "parameters": ckpt.num_parameters(), "rope_scaling": config.get("rope_scaling"),
                             "context_length": families.context_length(config), "seconds": round(time.perf_counter() - t0, 2),
                             "verification": {"tokenizer": tokens}})
        if not tokens["passed"]:
            _, error = verify.reject(tmp, out, verify.tokenization_summary(tokens),
                                     "the converted tokenizer.json does not encode like the source's")
            raise error
    progress.say(f"wrote {out} ({ckpt.family.name} → transformers {config['architectures'][0]})", quiet)
    return out
