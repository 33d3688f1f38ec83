"""Result files: versioned JSON, CSV, and a Markdown table people can read."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from glmkit.common.atomic import write_text
from glmkit.convert import GlmkitError

from .run import SCHEMA_VERSION

COLUMNS = ("label", "precision", "prompt_tokens", "decode_tps", "raw_decode_tps", "vs_raw", "ceiling_tps",
           "pct_of_ceiling", "prefill_tps", "ttft_ms", "tpot_ms_p50", "tpot_ms_p90", "peak_rss_mb", "speedup",
           "perplexity", "top1", "kl", "size_mb", "load_s")


def load_results(path: str | Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GlmkitError(f"{path}: not a glm-bench result file ({e.__class__.__name__})") from None
    if data.get("schema_version") != SCHEMA_VERSION:
        raise GlmkitError(f"{path}: schema version {data.get('schema_version')} is not {SCHEMA_VERSION}; "
                          "re-run glm-bench run with this glmkit")
    return data


def save_results(data: dict, path: str | Path) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def rows(data: dict) -> list[dict]:
    out = []
    for r in data["results"]:
        s, q, raw, roof = r["speed"], r.get("quality") or {}, r.get("raw"), r.get("roofline")
        out.append({
            "label": r["label"], "precision": r["precision"], "prompt_tokens": r["prompt_tokens"],
            **{k: round(s[k]["median"], 2) if k in s else "" for k in ("decode_tps", "prefill_tps", "ttft_ms",
                                                                        "tpot_ms_p50", "tpot_ms_p90", "peak_rss_mb")},
            "raw_decode_tps": round(raw["decode_tps"]["median"], 2) if raw else "",
            "vs_raw": f"{r['glmkit_vs_raw']['median']:.1%}" if raw else "",
            "ceiling_tps": round(roof["ceiling_tps"], 1) if roof else "",
            "pct_of_ceiling": f"{roof['percent_of_ceiling']:.0f}%" if roof else "",
            "speedup": round(r["speedup_vs_reference"]["median"], 2) if r.get("speedup_vs_reference") else "",
            "perplexity": round(q["perplexity"], 3) if q else "", "top1": f"{q['top1_agreement']:.1%}" if q else "",
            "kl": round(q["mean_kl"], 5) if q else "", "size_mb": round(r["size_bytes"] / 2**20, 1),
            "load_s": round(r["load_s"], 2),
        })
    return out


def to_csv(data: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(rows(data))
    return buf.getvalue()


def to_markdown(data: dict) -> str:
    env = data["environment"]
    spread = {(r["label"], r["prompt_tokens"]): r["speed"]["decode_tps"] for r in data["results"]}
    bw = f"{env['bandwidth_gbs']:.1f} GB/s read bandwidth · " if env.get("bandwidth_gbs") else ""
    lines = [f"{env['cpu']} · {env['threads']} threads · {bw}glmkit {env.get('glmkit_commit') or '?'} · "
             f"{data['settings']['reps']} reps, {data['settings']['gen']} new tokens, medians (decode min–max)", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows(data):
        d = spread[(row["label"], row["prompt_tokens"])]
        row = {**row, "decode_tps": f"{row['decode_tps']} ({d['min']:.1f}–{d['max']:.1f})"}
        lines.append("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def write_reports(data: dict, out_dir: str | Path, stem: str = "results") -> list[Path]:
    """STEM.json, .md, .csv and the PNG plots, into out_dir."""
    from .plots import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [save_results(data, out_dir / f"{stem}.json")]
    for suffix, text in ((".md", to_markdown(data)), (".csv", to_csv(data))):
        path = out_dir / f"{stem}{suffix}"
        write_text(path, text)
        written.append(path)
    return written + plots(data, out_dir, stem)
