"""PNG plots of a result file: decode speed per config (with raw engine and roofline), and speed against quality."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path


def available() -> bool:
    """matplotlib is in `glmkit[plots]` (and `[convert]`), not in the lean runtime install."""
    return find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed (CI, notebooks render the PNGs)
    import matplotlib.pyplot as plt

    return plt


def _name(r: dict) -> str:
    return f"{r['label']} ({r['precision']}) @{r['prompt_tokens']}"


def decode_plot(data: dict, path: str | Path) -> Path:
    """Horizontal bars: glmkit's median decode t/s with its interquartile range; the raw engine (×) and the memory
    roofline ceiling (|) beside each bar."""
    plt = _pyplot()
    rs = data["results"]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rs) + 1.6))
    y = range(len(rs))
    med = [r["speed"]["decode_tps"]["median"] for r in rs]
    err = [[m - r["speed"]["decode_tps"]["p25"] for m, r in zip(med, rs)],
           [r["speed"]["decode_tps"]["p75"] - m for m, r in zip(med, rs)]]
    colors = ["#9e9e9e" if r.get("role") == "reference" else "#3b6ea8" for r in rs]
    ax.barh(list(y), med, xerr=err, color=colors, capsize=3, label="glmkit (median, IQR)")
    raw = [(i, r["raw"]["decode_tps"]["median"]) for i, r in enumerate(rs) if r.get("raw")]
    if raw:
        ax.scatter([v for _, v in raw], [i for i, _ in raw], marker="x", color="black", zorder=3, label="raw engine")
    roof = [(i, r["roofline"]["ceiling_tps"]) for i, r in enumerate(rs) if r.get("roofline")]
    if roof:
        ax.scatter([v for _, v in roof], [i for i, _ in roof], marker="|", s=200, color="#c0392b", zorder=3,
                   label="memory roofline")
    ax.set_yticks(list(y), [_name(r) for r in rs])
    ax.invert_yaxis()
    ax.set_xlabel("decode tokens/s")
    env = data["environment"]
    ax.set_title(f"{env['cpu']} · {env['threads']} threads", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def quality_plot(data: dict, path: str | Path) -> Path | None:
    """Each config with quality figures as a point: decode t/s against mean KL from the fp32 reference."""
    rs = [r for r in data["results"] if r.get("quality")]
    if not rs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in rs:  # a legend, not annotations: configs of similar speed and quality would overlap
        x, kl = r["speed"]["decode_tps"]["median"], max(r["quality"]["mean_kl"], 1e-7)
        ax.scatter([x], [kl], s=40, label=f"{_name(r)} · top-1 {r['quality']['top1_agreement']:.1%}")
    ax.set_yscale("log")
    ax.set_xlabel("decode tokens/s (faster →)")
    ax.set_ylabel("mean KL vs fp32 reference (lower is better)")
    ax.set_title("speed against quality", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)


def length_plot(data: dict, path: str | Path) -> Path | None:
    """Prefill and decode t/s against the prompt length, one line per config (runs with several lengths)."""
    lengths = sorted({r["prompt_tokens"] for r in data["results"]})
    if len(lengths) < 2:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label in dict.fromkeys(r["label"] for r in data["results"]):
        rs = sorted((r for r in data["results"] if r["label"] == label), key=lambda r: r["prompt_tokens"])
        for ax, key in zip(axes, ("prefill_tps", "decode_tps")):
            ax.plot([r["prompt_tokens"] for r in rs], [r["speed"][key]["median"] for r in rs], marker="o",
                    label=label)
    for ax, title in zip(axes, ("prefill tokens/s", "decode tokens/s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (prompt tokens)")
        ax.set_ylabel(title)
    axes[1].legend(fontsize=7)
    env = data["environment"]
    fig.suptitle(f"speed against context · {env['cpu']} · {env['threads']} threads", fontsize=9)
    return _save(fig, path)


def _save(fig, path) -> Path:
    import io

    from glmkit.common.atomic import write_bytes

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # keeps a legend placed outside the axes
    _pyplot().close(fig)
    return write_bytes(path, buf.getvalue())


def plots(data: dict, out_dir: str | Path, stem: str = "results") -> list[Path]:
    if not available():
        return []
    out_dir = Path(out_dir)
    made = [decode_plot(data, out_dir / f"{stem}-decode.png"), quality_plot(data, out_dir / f"{stem}-quality.png"),
            length_plot(data, out_dir / f"{stem}-length.png")]
    return [p for p in made if p]
