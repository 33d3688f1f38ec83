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
from pathlib import Path

import numpy as np

from glmkit.convert import GlmkitError, manifest
from glmkit.runtimes import GenerationConfig, load

from .environment import environment

SCHEMA_VERSION = 1


def summarize(values: list[float]) -> dict:
    v = sorted(values)
    p25, p75 = (float(x) for x in np.percentile(v, [25, 75]))
    return {"median": statistics.median(v), "p25": p25, "p75": p75, "min": v[0], "max": v[-1], "n": len(v)}


def _p90(values: list[float]) -> float:
    return float(np.percentile(values, 90)) if values else 0.0


def prompts(runtime, count: int, length: int) -> list[list[int]]:
    """`count` different prompts of exactly `length` tokens, cut from glm4-tiny's held-out text."""
    from glmkit.convert.embedded import held_out_text

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
    from glmkit.convert import source

    path = Path(model)
    if not path.exists():
        path = source.resolve(model, quiet=True).path
    m = manifest.read(path) or {}
    settings = m.get("settings") or {}
    precision = settings.get("weight_format") or settings.get("outtype") or getattr(runtime, "dtype", "source")
    return str(precision), _size_on_disk(path)


def _thread_options(backend: str, threads: int | None) -> dict:
    if not threads:
        return {}
    return {"openvino": {"INFERENCE_NUM_THREADS": threads}, "llamacpp": {"n_threads": threads},
            "transformers": {"threads": threads}}.get(backend, {})


def bench_speed(model: str, backend: str = "auto", prompt_lengths=(128,), gen: int = 64, reps: int = 5,
                warmup: int = 1, threads: int | None = None, label: str | None = None, **options) -> list[dict]:
    from glmkit.runtimes import detect_backend

    kind = detect_backend(model) if backend == "auto" else backend
    t0 = time.perf_counter()
    rt = load(model, backend=kind, **{**_thread_options(kind, threads), **options})
    load_s = time.perf_counter() - t0
    precision, size = _describe(model, rt)
    cfg = GenerationConfig(max_new_tokens=gen, ignore_eos=True)
    pool = iter(prompts(rt, (warmup + reps) * len(prompt_lengths), max(prompt_lengths)))
    out = []
    for length in prompt_lengths:
        for _ in range(warmup):
            rt.generate(next(pool)[:length], cfg)
        runs = [rt.generate(next(pool)[:length], cfg) for _ in range(reps)]
        out.append({
            "label": label or f"{Path(model).name}/{rt.backend}", "model": str(model), "backend": rt.backend,
            "precision": precision, "prompt_tokens": length, "gen_tokens": gen, "reps": reps,
            "load_s": load_s, "size_bytes": size,
            "speed": {
                "decode_tps": summarize([r.decode_tps for r in runs]),
                "prefill_tps": summarize([r.prefill_tps for r in runs]),
                "ttft_ms": summarize([r.ttft_ms for r in runs]),
                "tpot_ms_p50": summarize([statistics.median(r.itl_ms) for r in runs]),
                "tpot_ms_p90": summarize([_p90(r.itl_ms) for r in runs]),
                "peak_rss_mb": summarize([r.peak_rss_mb for r in runs]),
            },
            "engine": runs[-1].engine,
        })
    rt.close()
    return out


def candidate_logits(model: str, ids: list[int]) -> np.ndarray:
    """All-position logits of an artifact through its engine (the functions the converters verify with)."""
    from glmkit.convert import verify
    from glmkit.convert.gguf import gguf_logits
    from glmkit.convert.openvino import ov_logits
    from glmkit.runtimes import detect_backend
    from glmkit.runtimes.load import _hf_dir

    kind = detect_backend(model)
    if kind == "openvino":
        return ov_logits(Path(model), ids)
    if kind == "llamacpp":
        return gguf_logits(Path(model), ids)
    return verify.reference_logits(_hf_dir(model), ids)


def perplexity(logits: np.ndarray, ids: list[int]) -> float:
    x = np.asarray(logits[:-1], dtype=np.float64)
    m = x.max(-1, keepdims=True)
    logp = x - (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))
    nll = -logp[np.arange(len(ids) - 1), ids[1:]]
    return float(math.exp(nll.mean()))


def bench_quality(model: str, reference: str, tokens: int = 512) -> dict:
    """Perplexity on held-out text, and KL / top-1 agreement against the fp32 reference, as llama.cpp's
    perplexity tool reports them."""
    from glmkit.convert import verify
    from glmkit.convert.embedded import held_out_text
    from glmkit.runtimes.load import _hf_dir
    from glmkit.runtimes.tokenizer import from_hf

    ref_dir = _hf_dir(reference)
    ids = from_hf(ref_dir).encode(held_out_text())[:tokens]
    ref = verify.reference_logits(ref_dir, ids)
    got = candidate_logits(model, ids)
    v = verify.compare(ref, got, "quality")
    return {"tokens": len(ids), "perplexity": perplexity(got, ids), "reference_perplexity": perplexity(ref, ids),
            "mean_kl": v.mean_kl, "top1_agreement": v.top1_agreement}


def run(models: list[str], backends: tuple[str, ...] = ("auto",), prompt_lengths=(128,), gen: int = 64,
        reps: int = 5, warmup: int = 1, threads: int | None = None, reference: str | None = None,
        quality: bool = True, quality_tokens: int = 512) -> dict:
    """Benchmark each model with each backend (and the transformers reference, bf16, in the same run)."""
    if reps < 1 or gen < 2:
        raise GlmkitError("--reps must be ≥ 1 and --gen ≥ 2 (decode speed needs two tokens)")
    results = []
    for model in models:
        for backend in backends:
            for r in bench_speed(model, backend, prompt_lengths, gen, reps, warmup, threads):
                if quality and reference:
                    r["quality"] = bench_quality(model, reference, quality_tokens)
                results.append(r)
    if reference:
        ref = bench_speed(reference, "transformers", prompt_lengths, gen, reps, warmup, threads,
                          label="reference/transformers-bf16", dtype="bfloat16")
        by_len = {r["prompt_tokens"]: r["speed"]["decode_tps"]["median"] for r in ref}
        for r in results:
            base = by_len.get(r["prompt_tokens"])
            if base:
                s = r["speed"]["decode_tps"]
                r["speedup_vs_reference"] = {k: s[k] / base for k in ("median", "p25", "p75", "min", "max")}
        results += ref
    return {"schema_version": SCHEMA_VERSION, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(threads), "settings": {"prompt_lengths": list(prompt_lengths), "gen": gen,
                                                               "reps": reps, "warmup": warmup, "reference": reference},
            "results": results}
