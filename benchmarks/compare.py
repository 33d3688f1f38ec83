"""glm-bench compare: is CURRENT slower than BASELINE beyond noise?

A figure regresses when its median is worse by more than `max_regression` AND the two runs' interquartile ranges
do not overlap (the current p75 is worse than the baseline p25) AND, where repetitions are stored, a one-sided
Mann–Whitney rank test says the current repetitions are worse than the baseline's with p < 0.05. The first rule
ignores small drifts, the other two a noisy machine: with another process keeping one of two cores busy, paired
glmkit/raw ratios of five repetitions scattered 0.68–1.32, and their quartiles alone once called a 12 % drop
(p = 0.075 by the rank test); a real 20 % slowdown separates every repetition (p = 0.004 with five).

What is judged:
- ratios measured inside one run — speed-up over the transformers reference, glmkit over the raw engine — taken
  repetition by repetition (see run.ratio), so they survive a slow spell and a change of machine;
- quality against the fp32 reference (perplexity, top-1 agreement, mean KL): deterministic, so only the relative
  threshold applies — a converter change that costs fidelity fails like one that costs speed;
- with `absolute`, and only when both runs come from the same CPU and thread count: decode/prefill t/s and TTFT.
  Off by default: on this project's shared 2-core VM two runs of the same commit minutes apart moved OpenVINO's
  prefill by 15 % and llama.cpp's by 34 %, with tight quartiles inside each run — a dedicated benchmark machine
  can afford absolute gating, a shared CI runner cannot.
The speed-up divides an engine's speed by torch's, two programs a machine's load moves differently, so between runs
it must fall by more than SPEEDUP_DRIFT as well: two runs of one commit minutes apart on the shared 2-core CI runner
moved bench int8's speed-up 4.30 → 3.58 (−16.7 %) with every repetition apart, while glmkit over its raw engine,
measured in the same rounds on the same model, moved 3 %. A lost optimisation (KV reuse, a kernel, a precision)
costs far more than that; a finer gate belongs on a dedicated machine (`--absolute`).
The speed-up is judged only between runs whose reference ran the same way — the same precision (fp16 where the CPU
computes it natively, else bf16) on the same ISA class: an fp16 reference on one CPU and bf16 on another moved the
gated speed-ups by +29 % to +62 % with glmkit unchanged. Otherwise it is shown, not judged, with one line saying to
refresh the baseline on that runner.
The reference rows themselves are a control, not a gate: their speed is torch's, and a drop there means the machine
got slower, which is what the in-run ratios correct for. Rows marked `"gate": "quality"` (glm4-tiny in the CI suite,
whose sub-millisecond tokens are scheduling noise) have their speed shown but not judged.
"""

from __future__ import annotations

from dataclasses import dataclass

# metric → True when higher is better
METRICS = {"decode_tps": True, "prefill_tps": True, "ttft_ms": False}
RATIOS = {"speedup": "speedup_vs_reference", "vs_raw": "glmkit_vs_raw"}
QUALITY = {"perplexity": False, "top1_agreement": True, "mean_kl": False}
KL_FLOOR = 1e-4  # KL below this is rounding (fp16 and f32 artifacts score ~1e-7): its relative change means nothing
# ISA features that change which kernels the reference (and the engines) run.
ISA_CLASS_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8",
                   "amx_fp16")


@dataclass
class Finding:
    key: str
    metric: str
    baseline: float
    current: float
    change: float        # relative, signed so that negative is worse
    regressed: bool
    judged: bool = True  # False: shown for context (reference rows; absolute figures unless asked for)

    def line(self) -> str:
        mark = "REGRESSION" if self.regressed else "ok" if self.judged else "(info)"
        return (f"{mark:10} {self.key:44} {self.metric:15} {self.baseline:10.4g} → {self.current:10.4g} "
                f"({self.change:+.1%})")


def _key(r: dict) -> str:
    return f"{r['label']}@{r['prompt_tokens']}"


ALPHA = 0.05
SPEEDUP_DRIFT = 0.25


def worse_p(base: list[float], cur: list[float], higher: bool) -> float:
    """One-sided exact Mann–Whitney p-value that `cur` is worse than `base` (smaller when higher is better)."""
    if not higher:
        base, cur = [-x for x in base], [-x for x in cur]
    n, m = len(cur), len(base)
    u = sum(1.0 if c < b else 0.5 if c == b else 0.0 for c in cur for b in base)  # pairs where cur is worse
    # counts[k] = arrangements of n + m ranks whose statistic is k (no ties), by the standard recursion
    counts = {(0, j): [1] for j in range(m + 1)}
    for i in range(1, n + 1):
        counts[(i, 0)] = [1]
        for j in range(1, m + 1):
            a, b = counts[(i - 1, j)], counts[(i, j - 1)]
            size = i * j + 1
            counts[(i, j)] = [(a[k - j] if 0 <= k - j < len(a) else 0) + (b[k] if k < len(b) else 0)
                              for k in range(size)]
    dist = counts[(n, m)]
    return sum(dist[k] for k in range(len(dist)) if k >= u - 1e-9) / sum(dist)


def _judge(key: str, metric: str, base: dict, cur: dict, higher: bool, max_regression: float,
           judged: bool = True) -> Finding:
    b, c = base["median"], cur["median"]
    change = (c - b) / b if higher else (b - c) / b
    apart = cur["p75"] < base["p25"] if higher else cur["p25"] > base["p75"]
    if apart and len(base.get("values", ())) >= 3 and len(cur.get("values", ())) >= 3:
        apart = worse_p(base["values"], cur["values"], higher) < ALPHA
    return Finding(key, metric, b, c, change, judged and change < -max_regression and apart, judged)


def _point(value: float) -> dict:
    """A deterministic figure as a summary with no spread."""
    return {"median": value, "p25": value, "p75": value}


def reference_precision(data: dict) -> str | None:
    """fp16 / bf16: recorded in the settings, or read off the reference row's label in older files."""
    found = (data.get("settings") or {}).get("reference_dtype")
    if found:
        return {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}.get(found, found)
    ref = next((r for r in data["results"] if r.get("role") == "reference"), None)
    return ref["label"].rsplit("-", 1)[-1] if ref else None


def isa_class(data: dict) -> str | None:
    flags = (data.get("environment") or {}).get("isa")
    return None if flags is None else "+".join(f for f in ISA_CLASS_FLAGS if f in flags) or "baseline x86-64"


def speedup_refusal(baseline: dict, current: dict) -> str | None:
    """Why the two runs' speed-ups over the reference cannot be compared, in one line (None: they can)."""
    b, c = reference_precision(baseline), reference_precision(current)
    if b and c and b != c:
        why = f"the reference ran in {c} here and in {b} for the baseline"
    elif isa_class(baseline) != isa_class(current):
        why = f"this CPU's ISA class ({isa_class(current)}) is not the baseline's ({isa_class(baseline)})"
    else:
        return None
    return (f"speed-ups over the reference not judged: {why}; refresh the baseline on this runner "
            "(glm-bench ci --update-baseline) to gate them")


def same_machine(baseline: dict, current: dict) -> bool:
    e, f = baseline["environment"], current["environment"]
    return (e.get("cpu"), e.get("threads")) == (f.get("cpu"), f.get("threads"))


def compare(baseline: dict, current: dict, max_regression: float = 0.10, absolute: bool = False) -> list[Finding]:
    """Findings for every config and metric present in both result files; absolute figures are shown always and
    judged only with `absolute` on the same machine."""
    base = {_key(r): r for r in baseline["results"]}
    absolute = absolute and same_machine(baseline, current)
    speedups = speedup_refusal(baseline, current) is None
    findings = []
    for r in current["results"]:
        b = base.get(_key(r))
        if b is None:
            continue
        speed = r.get("role") != "reference" and r.get("gate") != "quality"
        for metric, higher in METRICS.items():
            if metric in r["speed"] and metric in b["speed"]:
                findings.append(_judge(_key(r), metric, b["speed"][metric], r["speed"][metric], higher,
                                       max_regression, speed and absolute))
        for metric, field in RATIOS.items():
            if r.get(field) and b.get(field):
                judged = speed and (speedups or metric != "speedup")
                limit = max(max_regression, SPEEDUP_DRIFT) if metric == "speedup" else max_regression
                findings.append(_judge(_key(r), metric, b[field], r[field], True, limit, judged))
        for metric, higher in QUALITY.items():
            bq, cq = (b.get("quality") or {}).get(metric), (r.get("quality") or {}).get(metric)
            if bq is not None and cq is not None:
                if metric == "mean_kl":
                    bq, cq = max(bq, KL_FLOOR), max(cq, KL_FLOOR)
                findings.append(_judge(_key(r), metric, _point(bq), _point(cq), higher, max_regression))
    return findings
