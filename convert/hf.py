"""`--to hf`: any supported source as a transformers-native safetensors checkpoint.

glm4 and glm sources are re-sharded as they are; the original chatglm format is remapped natively (remap.py), so
no remote code is executed, now or when the result is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from glmkit.common import progress
from glmkit.common.paths import default_output
from glmkit.glm4 import families

from . import preflight
from .pipeline import Job, Target, convert


class HF(Target):
    kind = "hf"

    def __init__(self, max_shard_bytes: int | None = None, rope_scaling: str | None = None):
        self.max_shard_bytes = max_shard_bytes
        self.rope_scaling = rope_scaling

    def default_output(self, src: str) -> Path:
        return default_output(src, "hf")

    def preflight(self, job: Job) -> None:
        preflight.check_disk({job.out: job.source_bytes}, "writing the checkpoint")

    def export(self, job: Job) -> dict:
        from glmkit.sources.remap import write_checkpoint

        config = write_checkpoint(job.ckpt, job.tmp, quiet=job.quiet, max_shard_bytes=self.max_shard_bytes)
        if self.rope_scaling:
            config = families.with_yarn(config, self.rope_scaling)
            (job.tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        job.config = config
        progress.say(f"{job.ckpt.family.name} → transformers {config['architectures'][0]}", job.quiet)
        return {}

    def verify(self, job: Job):
        from . import verify

        tokens = verify.tokenization(job.ckpt.path, job.tmp)  # chatglm: against tiktoken itself on tokenizer.model
        progress.say(verify.tokenization_summary(tokens), job.quiet)
        failed = None if tokens["passed"] else (verify.tokenization_summary(tokens),
                                                "the converted tokenizer.json does not encode like the source's")
        return {"tokenizer": tokens}, failed


def to_hf(src: str, output: str | Path | None = None, *, force: bool = False, allow_pickle: bool = False,
          revision: str | None = None, quiet: bool = False, max_shard_bytes: int | None = None,
          rope_scaling: str | None = None) -> Path:
    """Write SRC as a transformers-native checkpoint at `output` (default ./NAME-hf); returns the path.
    rope_scaling "yarn:FACTOR" writes transformers' YaRN into config.json."""
    return convert(HF(max_shard_bytes, rope_scaling), src, output, rope_scaling=rope_scaling, force=force,
                   allow_pickle=allow_pickle, revision=revision, quiet=quiet)
