"""glm-bench run --speculative prompt-lookup|draft:PATH: decode speed with and without speculation, side by side.

The same requests go to the model loaded plainly and with speculation, alternating, greedy, each prompt prefilled
cold: input-grounded edits (glmkit.benchmarks.grounded: rename, quotes, repeat, extract on held-out functions) and
free text. Per kind: decode t/s of both, the speed-up, the share of proposals kept, tokens per verification pass,
and whether the answers were token-identical (they must be: speculation changes speed, never output).
`verification_cost` times what a pass of k+1 tokens costs against one of a single token: the speed-up's ceiling,
the figure that means something on a model whose weights are random (the bench shape).
"""

from __future__ import annotations

import statistics
import time

from glmkit.glm4.errors import GlmkitError
from glmkit.runtimes import GenerationConfig, load

from .environment import environment
from .grounded import EDITS, held_out_tasks

KINDS = (*EDITS, "free")


def options(spec: str, draft_tokens: int | None = None, ngram_size: int | None = None) -> dict:
    """load() options for `prompt-lookup` or `draft:PATH`."""
    if spec == "prompt-lookup":
        opts = {"speculative": "prompt-lookup", "ngram_size": ngram_size}
    elif spec.startswith("draft:") and spec[6:]:
        opts = {"draft": spec[6:]}
    else:
        raise GlmkitError(f"--speculative {spec}: give prompt-lookup or draft:PATH")
    return {k: v for k, v in {**opts, "draft_tokens": draft_tokens}.items() if v is not None}


def _row(rows: list[dict]) -> dict:
    def tps(runs):
        tokens, secs = sum(r["tokens"] - 1 for r in runs), sum(r["decode_s"] for r in runs)
        return tokens / secs if secs else 0.0

    plain, spec = [r["plain"] for r in rows], [r["speculative"] for r in rows]
    proposed, accepted = sum(r["proposed"] or 0 for r in spec), sum(r["accepted"] for r in spec)
    passes = sum(r["tokens"] - r["accepted"] for r in spec)  # each pass emits its accepted run plus one token
    return {"requests": len(rows), "tokens": sum(r["tokens"] for r in spec),
            "plain_tps": tps(plain), "speculative_tps": tps(spec),
            "speedup": tps(spec) / tps(plain) if tps(plain) else 0.0,
            "acceptance": accepted / proposed if proposed else None,  # None: the engine does not say (OpenVINO)
            "proposed": proposed if any(r["proposed"] is not None for r in spec) else None, "accepted": accepted,
            "tokens_per_pass": sum(r["tokens"] for r in spec) / passes if passes else 0.0,
            "identical": sum(r["identical"] for r in rows),
            "exact_answers": sum(r["exact"] for r in rows if r["exact"] is not None)}


def run(model: str, spec: str, count: int = 5, max_new_tokens: int = 256, backend: str = "auto",
        threads: int | None = None, draft_tokens: int | None = None, ngram_size: int | None = None,
        quiet: bool = False) -> dict:
    opts = options(spec, draft_tokens, ngram_size)
    tasks = held_out_tasks(count)
    common: dict = {"prefix_cache": False, "threads": threads}
    rows = []
    with load(model, backend, **common) as plain, load(model, backend, **common, **opts) as fast:
        config = GenerationConfig(max_new_tokens=max_new_tokens)
        for rt in (plain, fast):  # warm-up: first-call allocations are not the method's cost
            rt.generate(tasks[0]["messages"], GenerationConfig(max_new_tokens=8))
        for i, task in enumerate(tasks):
            got = {}
            for label, rt in (("plain", plain), ("speculative", fast)):
                t0 = time.perf_counter()
                r = rt.generate(task["messages"], config)
                wall = time.perf_counter() - t0
                got[label] = {"tokens": len(r.token_ids), "ids": r.token_ids, "text": r.text,
                              "decode_s": wall - r.ttft_ms / 1000, "proposed": r.engine.get("proposed"),
                              "accepted": r.engine.get("accepted", 0)}
            rows.append({"kind": task["kind"], "plain": got["plain"], "speculative": got["speculative"],
                         "identical": got["plain"]["ids"] == got["speculative"]["ids"],
                         "exact": (got["plain"]["text"].strip() == task["expected"].strip()
                                   if task["expected"] is not None else None)})
            if not quiet:
                s = got["speculative"]
                print(f"[{i + 1}/{len(tasks)}] {task['kind']}: {s['tokens']} tokens, {s['accepted']} kept of "
                      f"{s['proposed'] if s['proposed'] is not None else '?'}, identical {rows[-1]['identical']}",
                      flush=True)
        backend_used = fast.backend
    for r in rows:
        for side in ("plain", "speculative"):
            del r[side]["ids"], r[side]["text"]
    kinds = {k: _row([r for r in rows if r["kind"] == k]) for k in KINDS if any(r["kind"] == k for r in rows)}
    grounded = [r for r in rows if r["kind"] != "free"]
    return {"scenario": "speculative", "model": model, "backend": backend_used, "speculative": spec,
            "options": opts, "max_new_tokens": max_new_tokens, "environment": environment(),
            "kinds": kinds, "grounded": _row(grounded) if grounded else None, "requests": rows}


def verification_cost(model: str, ks=(1, 2, 4, 8, 16), context: int = 256, reps: int = 5,
                      threads: int | None = None) -> dict:
    """Milliseconds of one engine pass over k+1 tokens after `context` tokens, against one token's: the most a
    speculation of k tokens can gain is (k+1) × single / pass (every proposal kept). llama.cpp through llama_decode,
    OpenVINO through the stateful IR's own infer request (what openvino-genai runs)."""
    from glmkit.runtimes.kinds import kind_of

    kind = kind_of(model)
    kind.check(model)
    if kind.pass_timer is None:
        raise GlmkitError(f"{model}: the verification cost is timed on an OpenVINO IR or a GGUF, not {kind.label}")
    with kind.pass_timer(model, context, threads) as timed:
        def median_ms(n: int) -> float:
            return statistics.median(timed(n) for _ in range(reps))

        single = median_ms(1)
        rows = [{"k": k, "pass_ms": (ms := median_ms(k + 1)), "single_ms": single,
                 "ceiling": (k + 1) * single / ms} for k in ks]
    return {"model": model, "context": context, "rows": rows}


def to_markdown(data: dict) -> str:
    lines = [f"# Speculative decoding — {data['model']} ({data['backend']}, {data['speculative']})", "",
             "| requests | n | plain t/s | speculative t/s | speed-up | kept | tokens/pass | identical |",
             "|---|---|---|---|---|---|---|---|"]
    rows = dict(data["kinds"])
    if data.get("grounded"):
        rows["all input-grounded"] = data["grounded"]
    for kind, r in rows.items():
        lines.append(f"| {kind} | {r['requests']} | {r['plain_tps']:.1f} | {r['speculative_tps']:.1f} | "
                     f"{r['speedup']:.2f}× | {'—' if r['acceptance'] is None else format(r['acceptance'], '.0%')} | "
                     f"{r['tokens_per_pass']:.2f} | "
                     f"{r['identical']}/{r['requests']} |")
    if cost := data.get("verification_cost"):
        lines += ["", f"Verification cost after {cost['context']} tokens ({data['backend']}):", "",
                  "| k | pass of k+1 ms | 1 token ms | ceiling |", "|---|---|---|---|"]
        lines += [f"| {r['k']} | {r['pass_ms']:.2f} | {r['single_ms']:.2f} | {r['ceiling']:.2f}× |"
                  for r in cost["rows"]]
    return "\n".join(lines) + "\n"


def plot(data: dict, path) -> None:
    return None
