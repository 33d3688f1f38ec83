"""One conversion pipeline: `--to hf`, `--to openvino` and `--to gguf` run the same steps around their own export.

    check the output → open the source → preflight (disk, memory) → stage → export (the target's) →
    verify (the target's, against a transformers-native view of the source) → manifest → put in place atomically

A target plugs in what differs: its settings, the bytes it will write, its export, its checks. A failed check moves
the output aside (OUT.rejected, with its manifest) and raises; nothing half-written is ever at OUT.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from glmkit.common import manifest, progress
from glmkit.common.atomic import atomic_output, check_output, stage_dir
from glmkit.glm4 import families
from glmkit.glm4.errors import GlmkitError

if TYPE_CHECKING:
    from glmkit.sources.checkpoint import Checkpoint
    from glmkit.sources.source import Source


@dataclass
class Job:
    """One conversion in progress: what every step reads and writes."""

    src: str
    out: Path
    source: Source            # where the checkpoint came from
    ckpt: Checkpoint
    rope_scaling: str | None
    quiet: bool
    config: dict = field(default_factory=dict)  # the converted model's config (remapped, YaRN applied)
    timings: dict = field(default_factory=dict)
    _native: Path | None = None
    _stage: Path | None = None  # scratch beside OUT, removed however the run ends
    _tmp: Path | None = None    # the output being written, OUT's temporary

    @property
    def stage(self) -> Path:
        if self._stage is None:
            raise RuntimeError("the stage exists from export on")
        return self._stage

    @property
    def tmp(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("the output exists from export on")
        return self._tmp

    @cached_property
    def parameters(self) -> int:  # once: a pickled source is read whole to count them
        return self.ckpt.num_parameters()

    @cached_property
    def source_bytes(self) -> int:  # generated-on-read weights (sources/lazy.py) have no files: 2 bytes each
        return sum(f.stat().st_size for f in self.ckpt.weight_files) or 2 * self.parameters

    def native_dir(self) -> Path:
        """The source as a directory transformers loads as it is: a non-native family remapped into the stage (no
        remote code), and the YaRN asked for applied as a view; made once per job."""
        if self._native is None:
            from glmkit.sources.remap import write_checkpoint, yarn_view

            path = self.ckpt.path
            if not self.ckpt.family.native:
                progress.say(f"remapping {self.ckpt.family.name} → {self.ckpt.family.remap_to} (no remote code)",
                             self.quiet)
                path = self.stage / "hf"
                path.mkdir()
                write_checkpoint(self.ckpt, path, quiet=True)
            if self.rope_scaling:
                path = yarn_view(path, self.stage / "yarn", self.rope_scaling)
            self._native = Path(path)
        return self._native


class Target:
    """What one output kind plugs into the pipeline; subclasses override what differs."""

    kind = "?"
    is_dir = True
    takes_vision = False  # can carry GLM-4V's vision tower

    def refuse_vision(self, src: str) -> GlmkitError:
        """The clear error for a GLM-4V source, where this target has no way to carry its vision tower."""
        return GlmkitError(f"{src} is GLM-4V, a vision model: glmkit cannot convert it with "
                           f"--to {self.kind} yet; text GLM-4 checkpoints convert")

    def validate(self) -> None:
        """Refuse impossible settings before any work."""

    def default_output(self, src: str) -> Path:
        raise NotImplementedError

    def preflight(self, job: Job) -> None:
        """Disk, memory and source checks before anything is written."""

    def export(self, job: Job) -> dict:
        """Write the artifact at job.tmp; return its manifest fields."""
        raise NotImplementedError

    def verify(self, job: Job) -> tuple[dict, tuple[str, str] | None]:
        """(the manifest's verification record, None or (what failed, the hint))."""
        return {"skipped": "--no-verify"}, None


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".glmkit.json")


def convert(target: Target, src: str, output: str | Path | None = None, *, rope_scaling: str | None = None,
            verify: bool = True, force: bool = False, allow_pickle: bool = False, revision: str | None = None,
            quiet: bool = False) -> Path:
    """Run `target` on SRC; returns the output's path."""
    from glmkit.sources.source import open_source

    from . import verify as verify_mod

    target.validate()
    if rope_scaling:  # a bad spec fails before any work
        families.with_yarn({"max_position_embeddings": 1}, rope_scaling)
    out = check_output(output or target.default_output(src), force)
    t0 = time.perf_counter()
    source, ckpt = open_source(src, revision=revision, allow_pickle=allow_pickle, quiet=quiet)
    if ckpt.family.vision and not target.takes_vision:
        raise target.refuse_vision(src)
    job = Job(src, out, source, ckpt, rope_scaling, quiet)
    target.preflight(job)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    with stage_dir(out) as stage, atomic_output(out, force=force, is_dir=target.is_dir) as tmp:
        job._stage, job._tmp = Path(stage), Path(tmp)
        job.timings["load"] = time.perf_counter() - t0
        t = time.perf_counter()
        fields = target.export(job)
        job.timings["export"] = time.perf_counter() - t
        record, failed = {"skipped": "--no-verify"}, None
        if verify:
            t = time.perf_counter()
            record, failed = target.verify(job)
            job.timings["verify"] = time.perf_counter() - t
        job.timings["total"] = time.perf_counter() - t0
        data = {"kind": target.kind,
                "source": {**source.describe(), "weights_fingerprint": ckpt.fingerprint()},
                "family": ckpt.family.name, "output_family": ckpt.family.output_family, **fields,
                "rope_scaling": job.config.get("rope_scaling"), "context_length": families.context_length(job.config),
                "source_parameters": job.parameters,
                "seconds": {k: round(v, 2) for k, v in job.timings.items()}, "verification": record}
        if target.is_dir:  # inside the output: it moves with it, to OUT or aside
            manifest.write(tmp, data)
        if failed:
            rejected, error = verify_mod.reject(tmp, out, *failed)
            if not target.is_dir:
                manifest.write_file(sidecar(rejected), data)
            raise error
        if not target.is_dir:  # a file's manifest is its sidecar, NAME.glmkit.json
            manifest.write_file(sidecar(out), data)
    progress.say(f"wrote {out}", quiet)
    return out
