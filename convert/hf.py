"""`--to hf`: any supported source as a transformers-native safetensors checkpoint.

glm4 and glm sources are re-sharded as they are; the original chatglm format is remapped natively (remap.py), so
no remote code is executed, now or when the result is loaded. GLM-4V, which transformers has no class for, is
written for vLLM: its original layout under glmkit's model (serve/vllm_glm4v.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from glmkit.common import progress
from glmkit.common.paths import default_output
from glmkit.glm4 import families
from glmkit.glm4.errors import GlmkitError

from . import preflight
from .pipeline import Job, Target, convert


class HF(Target):
    kind = "hf"
    takes_vision = True  # GLM-4V in its original layout, for vLLM with glmkit's model (remap.write_glm4v)

    def __init__(self, max_shard_bytes: int | None = None, rope_scaling: str | None = None):
        self.max_shard_bytes = max_shard_bytes
        self.rope_scaling = rope_scaling

    def default_output(self, src: str) -> Path:
        return default_output(src, "hf")

    def preflight(self, job: Job) -> None:
        preflight.check_disk({job.out: job.source_bytes}, "writing the checkpoint")

    def export(self, job: Job) -> dict:
        from glmkit.sources.remap import write_checkpoint, write_glm4v

        if job.ckpt.family.vision and self.rope_scaling:
            raise GlmkitError("--rope-scaling: vLLM's ChatGLM layers, which GLM-4V runs on, read no rope "
                              "scaling; convert GLM-4V without --rope-scaling")
        write = write_glm4v if job.ckpt.family.vision else write_checkpoint
        config = write(job.ckpt, job.tmp, quiet=job.quiet, max_shard_bytes=self.max_shard_bytes)
        if self.rope_scaling:
            config = families.with_yarn(config, self.rope_scaling)
            (job.tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        job.config = config
        engine = "vLLM with glmkit installed" if job.ckpt.family.vision else "transformers"
        progress.say(f"{job.ckpt.family.name} → {engine}: {config['architectures'][0]}", job.quiet)
        return {}

    def verify(self, job: Job):
        from . import verify

        # chatglm: against tiktoken itself on tokenizer.model; GLM-4V's output is vLLM's: its tokenizer.json
        tokens = verify.tokenization(job.ckpt.path, job.tmp, ir=not job.ckpt.family.vision)
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
