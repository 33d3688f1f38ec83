"""glm-bench run: speed, memory and quality of GLM-4 artifacts, through glmkit's runtimes, in one result file.

Timing is glmkit's wall clock (the same for every backend; engines' own figures are kept as a cross-check).
Every repetition uses a different prompt: openvino-genai and llama.cpp reuse the KV cache of a repeated prompt
(a repeated prompt's TTFT fell from 740 ms to 18 ms here), which would flatter prefill.
"""

from __future__ import annotations

import math
import statistics
import time
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from glmkit.common import manifest
from glmkit.convert import GlmkitError
from glmkit.glm4.errors import REFERENCE_STACK, require
from glmkit.runtimes import GenerationConfig, load

from .environment import environment, reference_dtype
from .roofline import bandwidth_gbs, ceiling

SCHEMA_VERSION = 2


def summarize(values: list[float]) -> dict:
    """Median, quartiles and range of repetitions; the values themselves too, in repetition order."""
    v = sorted(values)
    p25, p75 = (float(x) for x in np.percentile(v, [25, 75]))
    return {"median": statistics.median(v), "p25": p25, "p75": p75, "min": v[0], "max": v[-1], "n": len(v),
            "values": [float(x) for x in values]}


def _p90(values: list[float]) -> float:
    return float(np.percentile(values, 90)) if values else 0.0


def prompts(runtime, count: int, length: int) -> list[list[int]]:
    """`count` different prompts of exactly `length` tokens, cut from glm4-tiny's held-out text."""
    from glmkit.sources.embedded import held_out_text

    ids = runtime.tokenizer.encode(held_out_text())
    if len(ids) < count * length:
        ids = (ids * math.ceil(count * length / max(1, len(ids))))  # distinct offsets still differ
    step = max(1, (len(ids) - length) // max(1, count))
    return [ids[i * step:i * step + length] for i in range(count)]


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _describe(model: str, runtime) -> tuple[str, int]:
    """(precision, size on disk) from glmkit's manifest where there is one."""
    from glmkit.sources import source

    path = Path(model)
    if not path.exists():
        path = source.resolve(model, quiet=True).path
    m = manifest.read(path) or {}
    settings = m.get("settings") or {}
    precision = settings.get("weight_format") or settings.get("outtype") or getattr(runtime, "dtype", "source")
    return str(precision), _size_on_disk(path)


def _thread_options(threads: int | None) -> dict:
    if not threads:
        return {}
    return {"threads": threads}


def _summaries(runs: list[dict]) -> dict:
    return {k: summarize([r[k] for r in runs]) for k in runs[0]}


def _reset_peak_rss() -> bool:
    """Linux: restart this process's resident high-water mark (VmHWM), so the next reading is one config's peak
    alone; getrusage's maxrss never goes down and would carry the largest model measured so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb(fallback: float) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return fallback


class Subject:
    """One model on one backend, loaded once, measured repetition by repetition. With `peers`, each repetition
    also times the raw engine on the same loaded model (who goes first alternates); every run gets a new prompt."""

    def __init__(self, model: str, backend: str = "auto", threads: int | None = None, label: str | None = None,
                 bandwidth: float | None = None, peers: bool = True, lengths=(128,), runs: int = 6, **options):
        from .peers import raw_runner
        from .roofline import weight_bytes_per_token

        self.model = model
        _reset_peak_rss()
        t0 = time.perf_counter()
        self.rt = load(model, backend=backend, **{**_thread_options(threads), **options})
        self.load_s = time.perf_counter() - t0
        self.precision, self.size = _describe(model, self.rt)
        self.label = label or f"{Path(model).name}/{self.rt.backend}"
        self.raw_fn = raw_runner(self.rt) if peers else None
        self.bandwidth = bandwidth
        self.weights = weight_bytes_per_token(model, runtime=self.rt) if bandwidth else 0
        self.pool = iter(prompts(self.rt, runs * len(lengths) * (2 if self.raw_fn else 1), max(lengths)))
        self.runs: dict[int, dict[str, list]] = {}

    def rep(self, length: int, gen: int, keep: bool, flip: bool) -> None:
        got = self.runs.setdefault(length, {"glmkit": [], "raw": [], "peak_rss_mb": []})
        cfg = GenerationConfig(max_new_tokens=gen, ignore_eos=True)
        steps = [("glmkit", lambda ids: self.rt.generate(ids, cfg))]
        if raw_fn := self.raw_fn:
            steps.append(("raw", lambda ids: raw_fn(self.rt, ids, gen)))
        for name, fn in steps[::-1] if flip else steps:
            r = fn(next(self.pool)[:length])
            if keep:
                got[name].append(r)
        if keep:
            got["peak_rss_mb"].append(_peak_rss_mb(got["glmkit"][-1].peak_rss_mb))

    def results(self, gen: int) -> list[dict]:
        out = []
        for length, got in self.runs.items():
            ours, raw = got["glmkit"], got["raw"]
            speed = _summaries([{"decode_tps": r.decode_tps, "prefill_tps": r.prefill_tps, "ttft_ms": r.ttft_ms,
                                 "tpot_ms_p50": statistics.median(r.itl_ms), "tpot_ms_p90": _p90(r.itl_ms),
                                 "peak_rss_mb": peak} for r, peak in zip(ours, got["peak_rss_mb"])])
            res = {"label": self.label, "model": str(self.model), "backend": self.rt.backend,
                   "precision": self.precision, "prompt_tokens": length, "gen_tokens": gen, "reps": len(ours),
                   "load_s": self.load_s, "size_bytes": self.size, "speed": speed, "engine": ours[-1].engine,
                   "kv_bytes_per_1k_tokens": int(self.rt.kv_bytes_per_token * 1024)}
            if raw:
                res["raw"] = _summaries(raw)
                res["glmkit_vs_raw"] = ratio(speed["decode_tps"], res["raw"]["decode_tps"])  # paired by rep
            if self.weights and self.bandwidth:
                res["roofline"] = ceiling(self.weights, self.bandwidth, speed["decode_tps"]["median"])
            out.append(res)
        return out

    def close(self) -> None:
        self.rt.close()


def perplexity(logits: np.ndarray, ids: list[int]) -> float:
    from glmkit.runtimes.logits import log_softmax

    logp = log_softmax(logits[:-1])
    nll = -logp[np.arange(len(ids) - 1), ids[1:]]
    return float(math.exp(nll.mean()))


def reference_logits(reference: str, tokens: int = 512) -> tuple[list[int], np.ndarray]:
    """glm4-tiny's held-out text as the reference's token ids, and the reference's fp32 logits on it."""
    from glmkit.runtimes import logits
    from glmkit.runtimes.tokenizer import from_hf
    from glmkit.sources.embedded import held_out_text
    from glmkit.sources.source import transformers_dir

    ids = from_hf(transformers_dir(reference)).encode(held_out_text())[:tokens]
    return ids, logits(reference, ids, backend="transformers")


def bench_quality(model: str, ids: list[int], ref: np.ndarray) -> dict:
    """Perplexity on held-out text, and KL / top-1 agreement against the fp32 reference's logits `ref` on `ids`,
    as llama.cpp's perplexity tool reports them."""
    from glmkit.convert import verify
    from glmkit.runtimes import logits

    got = logits(model, ids)
    v = verify.compare(ref, got, "quality")
    return {"tokens": len(ids), "perplexity": perplexity(got, ids), "reference_perplexity": perplexity(ref, ids),
            "mean_kl": v.mean_kl, "top1_agreement": v.top1_agreement}


def ratio(a: dict, b: dict) -> dict:
    """a / b for two summaries, repetition by repetition: the two were measured side by side (raw and glmkit
    alternate on one model; interleaved configs share each round), so a slow spell of the machine cancels out.
    (In a sequential run the pairing is only by index, and the ratio's spread combines both spreads.)"""
    return summarize([x / y for x, y in zip(a["values"], b["values"])])


def run(models: list[str], backends: tuple[str, ...] = ("auto",), prompt_lengths=(128,), gen: int = 64,
        reps: int = 5, warmup: int = 1, threads: int | None = None, reference: str | None = None,
        quality: bool = True, quality_tokens: int = 512, peers: bool = True, roofline: bool = True,
        interleave: bool = False, quiet: bool = False, kv_cache: str | None = None) -> dict:
    """Benchmark each model with each backend, beside the raw engines (peers), against the memory roofline and the
    transformers half-precision reference (bf16, or fp16 where the CPU computes it natively) measured in the same
    run.

    interleave: load every model at once and take repetitions round-robin, so a slow spell of a shared machine
    hits every config alike and the in-run ratios cancel it (needs the memory of all models together).
    """
    from glmkit.common import progress
    from glmkit.runtimes import detect_backend

    if reps < 1 or gen < 2:
        raise GlmkitError("--reps must be ≥ 1 and --gen ≥ 2 (decode speed needs two tokens)")
    for model in models:
        detect_backend(model)  # a missing or broken artifact fails here, before minutes of measuring
    if reference:
        require(REFERENCE_STACK, "--reference (the transformers reference)")
    bandwidth = None
    if roofline and find_spec("torch") is None:
        progress.say("roofline skipped: its bandwidth probe uses torch (pip install \"glmkit[convert]\")", quiet)
    elif roofline:
        progress.say(f"measuring memory bandwidth at {threads or 'all'} threads", quiet)
        bandwidth = bandwidth_gbs(threads)
    kv = {"kv_cache": kv_cache} if kv_cache else {}
    plan: list[dict] = [dict(model=m, backend=b, **kv) for m in models for b in backends]
    if reference:
        dtype = reference_dtype()
        plan.append(dict(model=reference, backend="transformers", dtype=dtype,
                         label=f"reference/{Path(reference).name}-{'fp16' if dtype == 'float16' else 'bf16'}"))
    lengths = tuple(prompt_lengths)
    common: dict = dict(threads=threads, bandwidth=bandwidth, peers=peers, lengths=lengths, runs=warmup + reps)
    schedule = [(length, i) for length in lengths for i in range(warmup + reps)]
    results: list[dict] = []
    with progress.task(f"benchmarking {len(plan)} config(s)", len(plan) * len(schedule), quiet) as advance:
        # Interleaved: every model loaded, repetitions round-robin. Otherwise one model at a time.
        for batch in [plan] if interleave else [[spec] for spec in plan]:
            subjects = [Subject(**spec, **common) for spec in batch]
            for length, i in schedule:
                for s in subjects:
                    s.rep(length, gen, keep=i >= warmup, flip=i % 2 == 1)
                    advance()
            for s in subjects:
                for r in s.results(gen):
                    if interleave:
                        del r["speed"]["peak_rss_mb"]  # one process held every model: no per-config figure
                    results.append(r)
                s.close()
    if reference:
        ref = {r["prompt_tokens"]: r for r in results if r["label"].startswith("reference/")}
        for r in results:
            if r["label"].startswith("reference/"):
                r["role"] = "reference"
            elif r["prompt_tokens"] in ref:
                r["speedup_vs_reference"] = ratio(r["speed"]["decode_tps"],
                                                  ref[r["prompt_tokens"]]["speed"]["decode_tps"])
    if quality and reference:
        ids, ref_logits = reference_logits(reference, quality_tokens)  # once for every config
        for r in results:
            if r.get("role") != "reference" and r["prompt_tokens"] == lengths[0]:
                progress.say(f"quality of {r['label']} against {reference}", quiet)
                r["quality"] = bench_quality(r["model"], ids, ref_logits)
    env = environment(threads)
    env["bandwidth_gbs"] = bandwidth
    return {"schema_version": SCHEMA_VERSION, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "environment": env, "settings": {"prompt_lengths": list(lengths), "gen": gen, "reps": reps,
                                             "warmup": warmup, "reference": reference, "interleave": interleave,
                                             "kv_cache": kv_cache,
                                             "reference_dtype": reference_dtype() if reference else None},
            "results": results}
