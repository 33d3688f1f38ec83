"""glm-bench quantize SRC: a sweep of quantization recipes for both engines — quality (KL, top-1 and perplexity
against the fp32 source on held-out text) against file size and decode speed, with the Pareto front marked.

Each recipe is converted by glm-convert's own functions (verification off: the sweep measures quality itself),
then measured by glm-bench run's machinery: one run for all artifacts, the source as the reference.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from glmkit.glm4.errors import GlmkitError

SCHEMA = "glm-bench-quantize/1"
# GGUF recipes: an llama.cpp type, "+imatrix" for glmkit's importance matrix from the embedded calibration text
GGUF_DEFAULT = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_k_m+imatrix", "iq4_xs+imatrix", "q3_k_m", "iq3_s+imatrix",
                "iq3_xxs+imatrix", "q2_k", "iq2_m+imatrix", "iq2_xs+imatrix")
# OpenVINO recipes: name → to_openvino options
OPENVINO: dict[str, dict] = {"int8": {"weight_format": "int8"},
            "int4": {"weight_format": "int4"},  # glmkit's default: GPTQ, group 32, ratio 1.0
            "int4-data-free": {"weight_format": "int4", "data_free": True},
            "int4-optimum-default": {"weight_format": "int4", "data_free": True, "group_size": 128, "ratio": 1.0}}
OPENVINO_DEFAULT = tuple(OPENVINO)


def _convert(src: str, engine: str, recipe: str, work: Path, quiet: bool) -> Path:
    from glmkit.convert import to_gguf, to_openvino

    safe = recipe.replace("+", "-")
    out = work / (f"{safe}.gguf" if engine == "gguf" else f"ov-{safe}")
    if out.exists():
        return out
    if engine == "gguf":
        outtype, _, extra = recipe.partition("+")
        if extra not in ("", "imatrix"):
            raise GlmkitError(f"--gguf {recipe}: write TYPE or TYPE+imatrix, e.g. q4_k_m+imatrix")
        return to_gguf(src, out, outtype=outtype, imatrix="embedded" if extra else None, verify=False, quiet=quiet)
    if recipe not in OPENVINO:
        raise GlmkitError(f"--openvino {recipe}: choose from {', '.join(OPENVINO)}")
    return to_openvino(src, out, verify=False, quiet=quiet, **OPENVINO[recipe])


def pareto(rows: list[dict], x: str = "bytes", y: str = "mean_kl") -> None:
    """Mark rows no other row beats on both size and KL (smaller is better for both)."""
    for r in rows:
        r["pareto"] = not any(o is not r and o[x] <= r[x] and o[y] <= r[y] and (o[x] < r[x] or o[y] < r[y])
                              for o in rows)


def run(src: str, gguf: tuple[str, ...] = GGUF_DEFAULT, openvino: tuple[str, ...] = OPENVINO_DEFAULT,
        work: str | Path | None = None, reps: int = 3, gen: int = 32, quality_tokens: int = 1024,
        speed: bool = True, threads: int | None = None, quiet: bool = False) -> dict:
    from glmkit.common import progress

    from . import run as run_mod
    from .run import reference_logits

    if not gguf and not openvino:
        raise GlmkitError("nothing to sweep: give --gguf and/or --openvino recipes")
    with tempfile.TemporaryDirectory(prefix="glm-bench-quantize-") as tmp:
        work = Path(work) if work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        artifacts = []
        for engine, recipes in (("gguf", gguf), ("openvino", openvino)):
            for recipe in recipes:
                progress.say(f"converting {src} → {engine} {recipe}", quiet)
                artifacts.append((engine, recipe, _convert(src, engine, recipe, work, quiet)))
        speeds = {}
        if speed:
            data = run_mod.run([str(p) for _, _, p in artifacts], prompt_lengths=(64,), gen=gen, reps=reps,
                               threads=threads, quality=False, peers=False, roofline=False, quiet=quiet)
            speeds = {r["model"]: r["speed"]["decode_tps"]["median"] for r in data["results"]}
        ids, ref = reference_logits(src, quality_tokens)
        rows = []
        for engine, recipe, path in artifacts:
            progress.say(f"quality of {engine} {recipe}", quiet)
            q = run_mod.bench_quality(str(path), ids, ref)
            size = path.stat().st_size if path.is_file() else (path / "openvino_model.bin").stat().st_size
            rows.append({"engine": engine, "recipe": recipe, "bytes": size, "mean_kl": q["mean_kl"],
                         "top1_agreement": q["top1_agreement"], "perplexity": q["perplexity"],
                         "decode_tps": speeds.get(str(path))})
    reference_ppl = run_mod.perplexity(ref, ids)
    pareto(rows)
    return {"schema": SCHEMA, "source": src, "tokens": len(ids), "reference_perplexity": reference_ppl,
            "size_counts": "GGUF file / OpenVINO openvino_model.bin (tokenizer files alike for every recipe)",
            "rows": sorted(rows, key=lambda r: r["bytes"])}


def to_markdown(data: dict) -> str:
    lines = [f"## glm-bench quantize · {data['source']}", "",
             f"KL and top-1 against the fp32 source over {data['tokens']} held-out tokens (source perplexity "
             f"{data['reference_perplexity']:.2f}); ★ = on the size/KL Pareto front. Bytes: {data['size_counts']}.",
             "", "| engine | recipe | MB | KL | top-1 | perplexity | decode t/s | |",
             "|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        tps = f"{r['decode_tps']:.1f}" if r["decode_tps"] else "—"
        lines.append(f"| {r['engine']} | {r['recipe']} | {r['bytes'] / 1e6:.2f} | {r['mean_kl']:.5f} | "
                     f"{r['top1_agreement']:.1%} | {r['perplexity']:.2f} | {tps} | {'★' if r['pareto'] else ''} |")
    return "\n".join(lines) + "\n"


def to_csv(data: dict) -> str:
    cols = ("engine", "recipe", "bytes", "mean_kl", "top1_agreement", "perplexity", "decode_tps", "pareto")
    return "\n".join([",".join(cols)] + [",".join("" if r[c] is None else str(r[c]) for c in cols)
                                         for r in data["rows"]]) + "\n"


def plot(data: dict, path) -> object:
    """KL (log) against size: one colour per engine, the Pareto front drawn through its points."""
    from .plots import _pyplot, _save, available

    if not available():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for engine, colour in (("gguf", "#3b6ea8"), ("openvino", "#c0504d")):
        rs = [r for r in data["rows"] if r["engine"] == engine]
        ax.scatter([r["bytes"] / 1e6 for r in rs], [r["mean_kl"] for r in rs], color=colour, label=engine, zorder=3)
        for r in rs:
            ax.annotate(r["recipe"], (r["bytes"] / 1e6, r["mean_kl"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
    front = [r for r in data["rows"] if r["pareto"]]
    ax.step([r["bytes"] / 1e6 for r in front], [r["mean_kl"] for r in front], where="post", color="#555",
            linestyle="--", linewidth=1, label="Pareto front")
    ax.set_yscale("log")
    ax.set_xlabel("size (MB)")
    ax.set_ylabel("mean KL vs fp32 source (held-out text)")
    ax.set_title(f"glm-bench quantize · {data['source']}", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
