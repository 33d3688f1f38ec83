"""`--to gguf`: a llama.cpp model file, verified through llama-cpp-python.

The file itself — metadata from the family's real config fields, GLM-4's tokenizer accepted by its pre-tokenizer
regex (not a hash), gguf-py's tensor names — is gguf_file.py's; f32/f16/bf16 are streamed there. Every quantized
type takes llama.cpp's own per-tensor choices and quantizer, tensor by tensor as the source streams
(gguf_stream.py), with an importance matrix computed on the source block by block (imatrix.py) and overrides when
asked; nothing full-precision is staged on disk."""

from __future__ import annotations

import time
from pathlib import Path

from glmkit.common import manifest, progress
from glmkit.common.paths import default_output
from glmkit.glm4 import families
from glmkit.glm4.errors import GlmkitError

from . import gguf_file, gguf_types, preflight
from .gguf_types import Override
from .pipeline import Job, Target, convert

CALIBRATION_CHUNKS = 16  # × 512 tokens for an importance matrix
METHODS = ("rtn", "autoround")  # llama.cpp's own rounding (with an importance matrix if asked), or AutoRound's


class GGUF(Target):
    kind = "gguf"

    def refuse_vision(self, src: str) -> GlmkitError:
        return GlmkitError(f"{src} is GLM-4V, a vision model: llama.cpp has no path for its vision tower "
                           "(mtmd's GLM4V projector is GLM-4.1V's; its cogvlm graph lacks GLM-4V's 2×2 downsample "
                           "and shared image positions), so a GGUF would lose the images; no --to gguf for GLM-4V")
    is_dir = False

    def __init__(self, outtype: str, rope_scaling: str | None, imatrix: str | None = None,
                 tensor_types: tuple[str, ...] = (), save_imatrix: str | Path | None = None,
                 calibration_chunks: int = CALIBRATION_CHUNKS, max_size: str | int | None = None,
                 memory: str | int | None = None, n_ctx: int = 4096, method: str = "rtn", iters: int | None = None,
                 dataset: str | None = None):
        self.outtype, self.rope_scaling, self.imatrix_spec = outtype, rope_scaling, imatrix
        self.tensor_types, self.save_imatrix = tensor_types, save_imatrix
        self.calibration_chunks, self.max_size = calibration_chunks, max_size
        self.overrides: list[Override] = []
        self.max_bytes: int | None = None
        self.memory, self.n_ctx = memory, n_ctx
        self.budget: dict | None = None
        self.method, self.iters, self.dataset = method, iters, dataset

    def validate(self) -> None:
        t = gguf_types.get(self.outtype)
        if self.method not in METHODS:
            raise GlmkitError(f"--method {self.method}: choose one of {', '.join(METHODS)}")
        if self.method == "autoround":
            from . import autoround

            self.iters = autoround.DEFAULT_ITERS if self.iters is None else self.iters
            autoround.check(self.outtype, self.iters)
            used = [f for f, v in (("--imatrix", self.imatrix_spec), ("--tensor-type", self.tensor_types),
                                   ("--max-size", self.max_size), ("--memory", self.memory)) if v]
            if used:
                raise GlmkitError(f"--method autoround tunes the rounding itself; drop {used[0]}")
        elif self.iters is not None:
            raise GlmkitError("--iters is AutoRound's: add --method autoround")
        self.overrides = [Override.parse(x) for x in self.tensor_types]
        if self.max_size is not None or self.memory is not None:
            from .sizes import parse_size

            limits = [parse_size(self.max_size, "--max-size")] if self.max_size is not None else []
            if self.memory is not None:
                limits.append(parse_size(self.memory, "--memory"))  # narrowed to the weights' share in preflight
                if self.n_ctx < 1:
                    raise GlmkitError(f"--n-ctx {self.n_ctx}: give at least 1 token")
            self.max_bytes = min(limits)
            if self.overrides:
                raise GlmkitError("--max-size and --memory choose the per-tensor types themselves; drop --tensor-type")
            self.imatrix_spec = self.imatrix_spec or "embedded"  # data-aware by default when choosing
        elif t.writer != "llama.cpp" and (self.imatrix_spec or self.overrides):
            raise GlmkitError(f"--outtype {self.outtype} is not quantized: --imatrix and --tensor-type apply to "
                              "quantized types (q8_0 … iq1_s)")
        elif t.needs_imatrix and not self.imatrix_spec:
            raise GlmkitError(gguf_types.imatrix_hint(f"--outtype {self.outtype}"))
        if self.calibration_chunks < 1:
            raise GlmkitError(f"--calibration-chunks {self.calibration_chunks}: give at least 1")
        if self.save_imatrix and not self.imatrix_spec:
            raise GlmkitError("--save-imatrix writes the importance matrix glmkit computes: add --imatrix embedded "
                              "or --imatrix TEXT_FILE")

    def default_output(self, src: str) -> Path:
        return Path(f"{default_output(src, 'max-size' if self.max_bytes else self.outtype)}.gguf")

    def preflight(self, job: Job) -> None:
        parameters, t = job.parameters, gguf_types.get(self.outtype)
        if self.memory is not None:
            from .recipe import memory_budget

            self.budget = memory_budget(job.ckpt, self.memory, self.n_ctx)
            self.max_bytes = min(self.max_bytes or self.budget["weights"], self.budget["weights"])
        out = (parameters * 2 if self.max_bytes else  # --max-size: a few candidates at once, at most f16's size
               preflight.output_bytes(parameters, self.outtype) if t.writer == "gguf-py"
               else int(parameters * t.bpw / 8 * 1.25) + 2**26)  # llama.cpp keeps some tensors higher
        preflight.check_disk({job.out: out
                              + (0 if job.ckpt.family.native else job.source_bytes)},  # remapped reference
                             f"converting to GGUF {self.outtype}")
        if job.ckpt.pickled:
            raise GlmkitError("--to gguf streams safetensors; convert pickled weights first with --to hf "
                              "--allow-pickle")

    def _imatrix(self, spec: str, job: Job):
        """(per-column weights, manifest record) from the user's file, or computed on the source block by block
        over calibration text (never the held-out text verification scores)."""
        import gguf

        from . import calibration
        from . import imatrix as im

        if Path(spec).suffix in (".gguf", ".dat"):
            m = im.load(spec)
            record = {"file": str(spec), "datasets": m.datasets, "chunks": m.chunk_count, "computed": False}
        else:
            source = job.native_dir()
            chunks = calibration.token_chunks(source, spec, 10**6)
            if self.max_bytes and spec == "embedded":  # --max-size scores on the last chunks: keep them unseen
                from .recipe import EVAL_CHUNKS

                chunks = chunks[:-EVAL_CHUNKS]
            chunks = chunks[:self.calibration_chunks]
            arch = gguf.MODEL_ARCH[gguf_file.ARCHS[job.ckpt.family.name]]
            with progress.task("importance matrix (source block by block, calibration text)",
                               total=job.config["num_hidden_layers"], quiet=job.quiet) as adv:
                m = im.from_source(source, chunks, gguf.get_tensor_name_map(arch, job.config["num_hidden_layers"]),
                                   dataset=spec if spec == "embedded" else Path(spec).name, progress=adv)
            record = {"dataset": spec, "chunks": len(chunks), "chunk_tokens": len(chunks[0]), "computed": True}
            if self.save_imatrix:
                im.save(m, self.save_imatrix)
                record["saved_to"] = str(self.save_imatrix)
                progress.say(f"wrote importance matrix {self.save_imatrix}", job.quiet)
        record["entries"] = len(m.sums)
        return m.weights(), record

    def _choose(self, job: Job, streamer, weights: dict | None, settings: dict, tok_dir: Path) -> None:
        """--max-size / --memory: recipes quantized from the stream and measured (recipe.py), the best that fits
        written; where even f16 fits, f16."""
        from . import recipe

        chosen = recipe.choose_gguf(streamer, self.max_bytes or 0, weights, job.native_dir(), job.parameters,
                                    job.stage, quiet=job.quiet)
        settings.update(outtype=chosen.outtype, max_size=chosen.record)
        settings["seconds"]["max_size"] = chosen.record["seconds"]
        if self.budget:
            settings["memory"] = self.budget
        self.outtype, self.overrides = chosen.outtype, chosen.overrides
        if self.overrides:
            settings["tensor_types"] = [str(o) for o in self.overrides]
        if chosen.path:  # the file measured is the file written
            chosen.path.replace(job.tmp)
        else:
            gguf_file.write(job.tmp, job.ckpt, job.config, tok_dir, "f16", job.src, job.quiet)
        if job.tmp.stat().st_size > (self.max_bytes or 0):  # never: choose_gguf measured it
            raise GlmkitError(f"--max-size: the chosen file is {job.tmp.stat().st_size:,} bytes, over "
                              f"{self.max_bytes:,}; please report this")

    def export(self, job: Job) -> dict:
        from glmkit.sources.remap import chatglm_to_glm_config, write_tokenizer

        ckpt = job.ckpt
        config = dict(ckpt.config) if ckpt.family.native else chatglm_to_glm_config(ckpt.config)
        job.config = config = families.with_yarn(config, self.rope_scaling) if self.rope_scaling else config
        tok_dir = ckpt.path
        if not ckpt.family.native:  # tokenizer.json from the tiktoken file, no remote code
            tok_dir = job.stage / "tok"
            tok_dir.mkdir()
            write_tokenizer(ckpt, tok_dir)
        settings: dict = {"outtype": self.outtype}
        if self.method == "autoround":
            from . import autoround, calibration

            texts = calibration.texts(self.dataset or "embedded", 10 * autoround.NSAMPLES, 4000)
            progress.say(f"quantizing to {self.outtype} with AutoRound ({self.iters} iterations)", job.quiet)
            settings["method"] = autoround.quantize(job.native_dir(), self.outtype, self.iters or 0, texts,
                                                    job.stage / "autoround.gguf", job.stage, job.quiet)
            settings["method"]["dataset"] = self.dataset or "embedded"
            gguf_file.rewrite(job.stage / "autoround.gguf", job.tmp, ckpt, config, tok_dir, job.src)
        elif gguf_types.get(self.outtype).writer == "llama.cpp" or self.max_bytes:  # streamed: no f16 stage
            from . import gguf_stream

            if self.overrides:  # before any long step: an override that names no tensor is a typo
                gguf_types.check_overrides(self.overrides, gguf_file.gguf_names(ckpt, config),
                                           has_imatrix=bool(self.imatrix_spec))
            steps = settings["seconds"] = {}
            weights = None
            if self.imatrix_spec:
                t = time.perf_counter()
                weights, settings["imatrix"] = self._imatrix(self.imatrix_spec, job)
                steps["imatrix"] = round(time.perf_counter() - t, 1)
            streamer = gguf_stream.Streamer(
                job.stage,
                lambda p, outtype, ftype, types: gguf_file.header_with_plan(p, ckpt, config, tok_dir, outtype,
                                                                            ftype, job.src, types),
                lambda: gguf_file.tensor_stream(ckpt, config, meta=False), label=ckpt.family.name, quiet=job.quiet)
            try:
                if self.max_bytes:
                    self._choose(job, streamer, weights, settings, tok_dir)
                else:
                    if self.overrides:
                        settings["tensor_types"] = [str(o) for o in self.overrides]
                    progress.say(f"quantizing to {self.outtype} with llama.cpp's choices, tensor by tensor"
                                 + (" with the importance matrix" if weights else ""), job.quiet)
                    t = time.perf_counter()
                    types = streamer.write(job.tmp, self.outtype, imatrix=weights, overrides=self.overrides)
                    steps["quantize"] = round(time.perf_counter() - t, 1)
                    settings["types"] = {q: sum(v == q for v in types.values()) for q in sorted(set(types.values()))}
            finally:
                streamer.close()
        else:
            gguf_file.write(job.tmp, ckpt, config, tok_dir, self.outtype, job.src, job.quiet)
        return {"file": job.out.name, "architecture": gguf_file.ARCHS[ckpt.family.name].lower(),
                "settings": settings, "size_bytes": job.tmp.stat().st_size,
                "file_identity": manifest.file_identity(job.tmp)}

    def verify(self, job: Job):
        from . import verify

        # the source as transformers runs it (a chatglm source remapped), with the same YaRN
        result, record = verify.check(job.native_dir(), job.tmp, self.outtype, parameters=job.parameters,
                                      candidate_bytes=job.tmp.stat().st_size,
                                      gated=job.source.kind != "synthetic", quiet=job.quiet)
        record["tokenizer"] = verify.tokenization(job.ckpt.path, job.tmp)
        progress.say(verify.tokenization_summary(record["tokenizer"], "llama.cpp tokenizer"), job.quiet)
        if result is not None and not result.passed:  # None: the reference cannot fit, skipped
            return record, (f"{result.summary()} for {result.precision}", "try a higher-precision --outtype")
        if not record["tokenizer"]["passed"]:
            return record, (verify.tokenization_summary(record["tokenizer"]),
                            "llama.cpp does not encode like the source's tokenizer")
        return record, None


def to_gguf(src: str, output: str | Path | None = None, *, outtype: str = "f16", verify: bool = True,
            force: bool = False, allow_pickle: bool = False, revision: str | None = None, quiet: bool = False,
            rope_scaling: str | None = None, imatrix: str | None = None, tensor_types: tuple[str, ...] = (),
            save_imatrix: str | Path | None = None, calibration_chunks: int = CALIBRATION_CHUNKS,
            max_size: str | int | None = None, memory: str | int | None = None, n_ctx: int = 4096,
            method: str = "rtn", iters: int | None = None, dataset: str | None = None) -> Path:
    """Write SRC as one GGUF file for llama.cpp; returns its path. The manifest goes beside it (NAME.glmkit.json).
    rope_scaling "yarn:FACTOR" writes YaRN into the file (llama.cpp reads {arch}.rope.scaling.*) and verifies
    against the source run with the same YaRN. imatrix: an importance matrix file (.gguf/.dat), or calibration
    text ("embedded" or a UTF-8 file) to compute one from; tensor_types: llama-quantize's PATTERN=TYPE overrides;
    max_size: the largest file allowed (bytes, or "2.5MB", "4.5GB"): glmkit chooses the type, importance matrix
    and overrides with the best measured quality that fits. memory: what the model may use when it runs, weights plus
    an f16 KV cache of n_ctx tokens plus llama.cpp's working memory; the file gets what is left. method
    "autoround": AutoRound tunes the k-quant rounding over `iters` steps on `dataset` (default embedded)."""
    target = GGUF(outtype, rope_scaling, imatrix, tuple(tensor_types), save_imatrix, calibration_chunks, max_size,
                  memory, n_ctx, method, iters, dataset)
    return convert(target, src, output, rope_scaling=rope_scaling, verify=verify, force=force,
                   allow_pickle=allow_pickle, revision=revision, quiet=quiet)
