"""`--to openvino`: optimum-intel's exporter plus NNCF weight compression, verified against the source.

The steps are those of `optimum-cli export openvino` (text-generation-with-past, stateful, tokenizers converted by
openvino-tokenizers), with GLM-4 defaults per target device, an offline calibration set, and a check of the result
against transformers before the output is put in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from glmkit.common import progress
from glmkit.common.paths import default_output
from glmkit.glm4 import families
from glmkit.glm4.errors import GlmkitError

from . import openvino_blockwise, preflight
from .calibration import texts as calibration_texts
from .openvino_ir import ir_weight_precisions, rope_frequencies_in_f32, write_generation_config
from .pipeline import Job, Target, convert

WEIGHT_FORMATS = ("fp16", "int8", "int4")
# int4 defaults per device. cpu/gpu: data-aware — NNCF's GPTQ on glmkit's calibration text, group 32, every layer
# int4 (measured on glm4-tiny against the alternatives: docs/quantization.md); --data-free: THUDM's own recipe.
# npu: what OpenVINO's NPU guide requires (symmetric, channel-wise or group 128, every layer in int4), data-free.
PROFILES = {
    "cpu": {"sym": False, "group_size": 32, "ratio": 1.0, "gptq": True},
    "gpu": {"sym": False, "group_size": 32, "ratio": 1.0, "gptq": True},
    "npu": {"sym": True, "group_size": -1, "ratio": 1.0, "gptq": False},
}
DATA_FREE_PROFILES = {"cpu": {"sym": False, "group_size": 128, "ratio": 0.8, "gptq": False},
                      "gpu": {"sym": False, "group_size": 128, "ratio": 0.8, "gptq": False},
                      "npu": PROFILES["npu"]}
NPU_GROUP_SIZES = (-1, 128)
OV_FILES = ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "openvino_detokenizer.xml")


@dataclass
class Compression:
    weight_format: str = "int4"
    sym: bool | None = None
    group_size: int | None = None
    ratio: float | None = None
    all_layers: bool = False
    awq: bool = False
    scale_estimation: bool = False
    gptq: bool | None = None  # None: the profile's default
    dataset: str | None = None
    num_samples: int | None = None
    profile: str = "cpu"
    data_free: bool = False
    vision_format: str | None = None  # GLM-4V's tower: None = the weight format's default (openvino_glm4v)
    vision_calibration: str | None = None

    def resolved(self, data_free: bool | None = None) -> dict:
        """Every setting, with the profile's defaults filled in; refuses what the target cannot run. data_free
        (default: the --data-free flag) takes the data-free profile."""
        if self.weight_format not in WEIGHT_FORMATS:
            raise GlmkitError(f"--weight-format {self.weight_format}: choose one of {', '.join(WEIGHT_FORMATS)}")
        if self.profile not in PROFILES:
            raise GlmkitError(f"--profile {self.profile}: choose one of {', '.join(PROFILES)}")
        data_free = self.data_free if data_free is None else data_free
        if self.data_free and (self.awq or self.scale_estimation or self.gptq or self.dataset):
            raise GlmkitError("--data-free uses no calibration text: drop --awq, --scale-estimation, --gptq and "
                              "--dataset")
        p = (DATA_FREE_PROFILES if data_free else PROFILES)[self.profile]
        gptq = (p["gptq"] and self.weight_format == "int4") if self.gptq is None else self.gptq
        sym = p["sym"] if self.sym is None else self.sym
        group = p["group_size"] if self.group_size is None else self.group_size
        ratio = p["ratio"] if self.ratio is None else self.ratio
        if self.weight_format == "int8":  # per-channel int8, every layer: NNCF's int8 scheme
            group, ratio = -1, 1.0
        if self.profile == "npu" and self.weight_format != "fp16":
            if not sym:
                raise GlmkitError("--profile npu needs symmetric weights (NPU has no zero points); drop --asym")
            if ratio < 1.0:
                raise GlmkitError(f"--profile npu needs --ratio 1.0 (got {ratio}): NPU runs one weight precision "
                                  "for every layer")
            if group not in NPU_GROUP_SIZES:
                raise GlmkitError(f"--profile npu supports --group-size -1 (channel-wise) or 128, not {group}")
        if not 0.0 < ratio <= 1.0:
            raise GlmkitError(f"--ratio {ratio}: must be in (0, 1]")
        if group != -1 and (group <= 0 or group % 16):
            raise GlmkitError(f"--group-size {group}: use -1 (channel-wise) or a positive multiple of 16")
        data_aware = self.awq or self.scale_estimation or gptq
        if data_aware and self.weight_format != "int4":
            raise GlmkitError("--awq, --scale-estimation and --gptq apply to --weight-format int4 only")
        dataset = self.dataset or ("embedded" if data_aware else None)
        if dataset and dataset != "embedded" and not Path(dataset).is_file():
            raise GlmkitError(f"--dataset {dataset}: no such file; give a UTF-8 text file or 'embedded'")
        vision = {}
        if self.vision_format or self.vision_calibration:
            from .openvino_glm4v import VISION_FORMATS, calibration_files

            if self.vision_format and self.vision_format not in VISION_FORMATS:
                raise GlmkitError(f"--vision-format {self.vision_format}: choose one of {', '.join(VISION_FORMATS)}")
            if self.vision_calibration and self.vision_format != "w8a8":
                raise GlmkitError("--vision-calibration calibrates the w8a8 tower: add --vision-format w8a8")
            if self.vision_calibration:
                calibration_files(self.vision_calibration)
            vision = {"vision_format": self.vision_format, "vision_calibration": self.vision_calibration}
        return {**vision, "weight_format": self.weight_format, "profile": self.profile, "sym": sym,
                "group_size": group,
                "ratio": ratio, "all_layers": self.all_layers, "awq": self.awq,
                "scale_estimation": self.scale_estimation, "gptq": gptq, "dataset": dataset,
                "num_samples": self.num_samples or (64 if dataset else None)}


def group_size_warnings(config: dict, group: int) -> list[str]:
    """Input dimensions of the linear layers that the group size does not divide."""
    if group == -1:
        return []
    h = config["hidden_size"]
    heads = config.get("num_attention_heads")
    dims = {"hidden_size": h, "intermediate_size": config.get("intermediate_size"),
            "num_attention_heads × head_dim": heads * config.get("head_dim", h // heads)}
    return [f"group size {group} does not divide {k} = {v}" for k, v in dims.items() if v and v % group]


def _nncf_config(settings: dict, source_dir: Path, config: dict, quiet: bool) -> dict | None:
    if settings["weight_format"] == "fp16":
        return None
    q = {"bits": 8 if settings["weight_format"] == "int8" else 4, "sym": settings["sym"],
         "group_size": settings["group_size"], "ratio": settings["ratio"],
         "all_layers": settings["all_layers"] or None, "quant_method": "awq" if settings["awq"] else "default",
         "scale_estimation": settings["scale_estimation"] or None, "gptq": settings["gptq"] or None,
         "dtype": settings["weight_format"]}
    if settings["dataset"]:
        q.update(dataset=calibration_texts(settings["dataset"], settings["num_samples"]),
                 num_samples=settings["num_samples"], tokenizer=str(source_dir))
    warnings = group_size_warnings(config, settings["group_size"])
    if warnings and settings["weight_format"] == "int4":
        for w in warnings:
            progress.say(f"warning: {w}; those layers fall back to the largest group size that divides it", quiet)
        q["group_size_fallback"] = "adjust"
    return q



@contextlib.contextmanager
def _no_offline_probe_warning():
    """Under HF_HUB_OFFLINE optimum-intel 1.27 looks a local IR directory up in the hub cache, fails, warns
    "Could not infer whether the model was already converted", then loads the directory correctly."""
    import logging

    log = logging.getLogger("optimum.intel.openvino.modeling_base")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _exporting(quiet: bool):
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # tracing prints dozens of TracerWarnings that say nothing to a user
    # OpenVINO's PyTorch frontend logs an error when it cannot wrap a model's dict inputs, then converts anyway
    logging.getLogger("openvino.frontend.pytorch.utils").setLevel(logging.CRITICAL)
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        warnings.simplefilter("ignore")
        if quiet:  # NNCF's bit-width table and progress bars write to the Python streams
            sink = stack.enter_context(open(os.devnull, "w"))
            stack.enter_context(contextlib.redirect_stdout(sink))
            stack.enter_context(contextlib.redirect_stderr(sink))
        yield


def _export(source_dir: Path, out: Path, settings: dict, config: dict, quiet: bool) -> None:
    if not openvino_blockwise.supports(settings):
        with _exporting(quiet):
            _export_and_compress(source_dir, out, settings, config, quiet)
        return
    # data-aware, one block at a time: the export compressed data-free with the same scheme, then every decoder
    # block's constants replaced by NNCF's calibrated ones
    with _exporting(quiet):
        _export_and_compress(source_dir, out, openvino_blockwise.data_free_settings(settings), config, quiet)
        blocks = openvino_blockwise.calibrate(source_dir, settings, out, quiet)
    openvino_blockwise.apply(out, blocks)
    shutil.rmtree(blocks)


def _export_and_compress(source_dir: Path, out: Path, settings: dict, config: dict, quiet: bool) -> None:
    from optimum.exporters.openvino.__main__ import _main_quantize, main_export
    from optimum.intel import OVConfig

    q = _nncf_config(settings, source_dir, config, quiet)
    ov_config = OVConfig(quantization_config=q) if q else OVConfig(dtype="fp16")
    kw = dict(task="text-generation-with-past", library_name="transformers", trust_remote_code=False)
    progress.say(f"exporting with optimum-intel ({'fp16' if not q else 'fp32 → NNCF'})", quiet)
    main_export(str(source_dir), out, ov_config=ov_config, stateful=True, convert_tokenizer=True, **kw)
    if q:  # as optimum-cli does: export, then compress the IR with NNCF
        progress.say(f"compressing weights with NNCF ({settings['weight_format']}, sym={settings['sym']}, "
                     f"group {settings['group_size']}, ratio {settings['ratio']})", quiet)
        with _no_offline_probe_warning():
            _main_quantize(str(source_dir), quantization_config=q, output=out, cache_dir=None, **kw)
    missing = [f for f in OV_FILES if not (out / f).is_file()]
    if missing:
        raise GlmkitError(f"export produced no {', '.join(missing)}; openvino-tokenizers may be missing or "
                          "mismatched — reinstall glmkit's pinned stack")
    if not q:
        rope_frequencies_in_f32(out, source_dir)




class OpenVINO(Target):
    kind = "openvino"
    takes_vision = True  # GLM-4V: openvino_glm4v.py

    def __init__(self, compression: Compression, max_size: str | int | None = None,
                 memory: str | int | None = None, n_ctx: int = 4096):
        self.compression = compression
        self.settings: dict = {}
        self.max_size, self.memory, self.n_ctx = max_size, memory, n_ctx
        self.max_bytes: int | None = None
        self.budget: dict | None = None

    def validate(self) -> None:
        from .sizes import parse_size

        self.settings = self.compression.resolved()
        limits = [parse_size(v, f"--{k}") for k, v in (("max-size", self.max_size), ("memory", self.memory))
                  if v is not None]
        self.max_bytes = min(limits) if limits else None

    def default_output(self, src: str) -> Path:
        return default_output(src, f"ov-{self.settings['weight_format']}")

    def _data_aware(self) -> bool:
        return bool(self.settings.get("gptq") or self.settings.get("awq") or self.settings.get("scale_estimation"))

    def preflight(self, job: Job) -> None:
        from glmkit.sources.lazy import refuse_files

        refuse_files(job.ckpt, "optimum-intel's export")
        parameters, fmt = job.parameters, self.settings["weight_format"]
        if self.settings.get("vision_format") and not job.ckpt.family.vision:
            raise GlmkitError(f"--vision-format is for GLM-4V checkpoints; {job.src} is a text model (drop it)")
        if job.ckpt.family.vision:  # GLM-4V's language model compresses data-free: its calibration needs images
            self.settings = self.compression.resolved(data_free=True)
            from .openvino_glm4v import preflight as glm4v_preflight

            if self.max_bytes:
                raise GlmkitError("--max-size and --memory choose among text recipes; GLM-4V converts with "
                                  "--weight-format int8 or int4")
            return glm4v_preflight(job, self.settings)
        if self.memory is not None:
            from .recipe import memory_budget

            self.budget = memory_budget(job.ckpt, self.memory, self.n_ctx)
            self.max_bytes = min(self.max_bytes, self.budget["weights"])
        whole = self._data_aware() and not openvino_blockwise.supports(self.settings)
        short = preflight.calibration_memory_shortfall(parameters) if whole else None
        if short:  # GPTQ and scale estimation at ratio 1.0 (the default) calibrate block by block and always fit
            raise GlmkitError(f"{short}; drop --awq and keep --ratio 1.0 (GPTQ and scale estimation then calibrate "
                              "one block at a time), or convert on a larger machine")
        preflight.check_disk({job.out: preflight.output_bytes(parameters, fmt) + 2 * parameters  # exported IR
                              + (0 if job.ckpt.family.native else job.source_bytes)},  # remapped source
                             f"exporting to OpenVINO {fmt}")
        preflight.check_export_memory(parameters, job.quiet)

    def export(self, job: Job) -> dict:
        if job.ckpt.family.vision:
            from . import openvino_glm4v

            openvino_glm4v.check_settings(self.settings)
            source_dir = job.native_dir()
            q = _nncf_config(self.settings, source_dir, json.loads((source_dir / "config.json").read_text()),
                             job.quiet)
            with _exporting(job.quiet):
                fields = openvino_glm4v.export(job, self.settings, q)
            self.size = fields["size_bytes"]
            return fields
        source_dir = job.native_dir()
        job.config = json.loads((source_dir / "config.json").read_text())
        fmt = families.chat_format(job.config, job.src)
        extra: dict[str, object] = {}
        if self.max_bytes:
            from . import recipe

            candidates = iter(range(1, 100))

            def candidate(overrides: dict, dry: bool):
                settings = dataclasses.replace(self.compression, **overrides).resolved()
                out = job.stage / f"candidate-{next(candidates)}"
                if not dry:
                    _export(source_dir, out, settings, job.config, job.quiet)
                    write_generation_config(out, source_dir, fmt)
                return settings, out

            # the IR tokenizer, detokenizer and tokenizer.json together: about twice the source's tokenizer.json
            other = 2 * (source_dir / "tokenizer.json").stat().st_size
            self.settings, chosen, extra["max_size"] = recipe.choose_openvino(job.config, self.max_bytes,
                                                                              candidate, other, job.quiet)
            if self.budget:
                extra["memory"] = self.budget
            for f in chosen.iterdir():
                os.replace(f, job.tmp / f.name)
        else:
            _export(source_dir, job.tmp, self.settings, job.config, job.quiet)
            write_generation_config(job.tmp, source_dir, fmt)
        self.size = sum(f.stat().st_size for f in job.tmp.iterdir() if f.is_file())
        if openvino_blockwise.supports(self.settings):
            extra["calibration"] = "one decoder block at a time"
        return {"chat_format": fmt.name, "settings": {**self.settings, **extra},
                "weight_precisions": ir_weight_precisions(job.tmp / "openvino_model.xml"), "size_bytes": self.size}

    def verify(self, job: Job):
        from . import verify

        if job.ckpt.family.vision:
            from . import openvino_glm4v

            result, record = openvino_glm4v.verify(job, self.settings["weight_format"],
                                                   gated=job.source.kind != "synthetic")
        else:
            result, record = verify.check(job.native_dir(), job.tmp, self.settings["weight_format"],
                                          parameters=job.parameters, candidate_bytes=self.size,
                                          gated=job.source.kind != "synthetic", quiet=job.quiet)
        # glmkit's runtime tokenizes with tokenizer.json (gated); openvino-genai and OVMS use the IR tokenizer,
        # whose BPE ignores tokenizer.json's ignore_merges (measured and recorded)
        record["tokenizer"] = verify.tokenization(job.ckpt.path, job.tmp, ir=False)
        record["ir_tokenizer"] = verify.tokenization(job.ckpt.path, job.tmp, gate=False)
        progress.say(verify.tokenization_summary(record["tokenizer"], "runtime tokenizer"), job.quiet)
        progress.say(verify.tokenization_summary(record["ir_tokenizer"], "IR tokenizer"), job.quiet)
        if result is not None and not result.passed:  # None: the reference cannot fit, skipped
            return record, (f"{result.summary()} for {result.precision}",
                            "try a higher precision, a lower --ratio or --awq")
        if not record["tokenizer"]["passed"]:
            return record, (verify.tokenization_summary(record["tokenizer"]),
                            "the converted tokenizer.json does not encode like the source's")
        return record, None


def to_openvino(src: str, output: str | Path | None = None, *, weight_format: str = "int4", sym: bool | None = None,
                group_size: int | None = None, ratio: float | None = None, all_layers: bool = False,
                awq: bool = False, scale_estimation: bool = False, gptq: bool | None = None,
                dataset: str | None = None, num_samples: int | None = None, profile: str = "cpu",
                data_free: bool = False, max_size: str | int | None = None, memory: str | int | None = None,
                n_ctx: int = 4096, method: str = "rtn", vision_format: str | None = None,
                vision_calibration: str | None = None, rope_scaling: str | None = None, verify: bool = True,
                force: bool = False, allow_pickle: bool = False, revision: str | None = None,
                quiet: bool = False) -> Path:
    """Export SRC to an OpenVINO IR directory that runs as it is in openvino_genai.LLMPipeline. max_size / memory
    (with n_ctx): glmkit picks the most faithful recipe whose directory fits (recipe.OPENVINO_LADDER)."""
    if method == "autoround":
        raise GlmkitError("--method autoround is for --to gguf: its only OpenVINO path (sym W4A16 → "
                          "compressed-tensors → optimum-intel) loses GLM-4's q/k/v biases in OpenVINO 2026.4.1 "
                          "(KL 0.21 on glm4-tiny against 0.005 for glmkit's GPTQ int4); use the default int4")
    if method != "rtn":
        raise GlmkitError(f"--method {method}: choose rtn or autoround")
    compression = Compression(weight_format, sym, group_size, ratio, all_layers, awq, scale_estimation, gptq,
                              dataset, num_samples, profile, data_free, vision_format, vision_calibration)
    return convert(OpenVINO(compression, max_size, memory, n_ctx), src, output, rope_scaling=rope_scaling,
                   verify=verify, force=force, allow_pickle=allow_pickle, revision=revision, quiet=quiet)
