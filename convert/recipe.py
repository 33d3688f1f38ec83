"""`--max-size`: the quantization recipe with the best measured quality whose file fits.

For GGUF, with an importance matrix (glmkit's calibration text unless the user gave one):
  1. every llama.cpp type is sized by llama.cpp's dry run; the largest that fit are quantized and measured (three
     below BROAD_BELOW parameters, one above, where each quantization takes minutes);
  2. the best one is then raised tensor group by tensor group (token_embd, output, attn_q/k/v/output,
     ffn_up/down to 6–8 bits): each group's raise is spliced from one file quantized at the higher type
     (convert/splice.py) and measured alone, the groups with the most KL saved per byte are kept while the file
     still fits, and the mix is measured once more and kept only if it beats the plain type.
The file measured last is the file written: nothing is quantized again after the choice.
Every candidate is quantized as the source streams (gguf_stream.py: no f16 file on disk; candidates sit on disk
a few at a time). Quality here is KL against the fp32 source, run block by block, on calibration text that
neither the importance matrix nor verification uses (the last chunks of the calibration text); the held-out text
stays for verification.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glmkit.common import progress
from glmkit.glm4.errors import GlmkitError

from . import gguf_types
from .gguf_types import Override
from .sizes import human
from .splice import splice

BROAD_BELOW = 2e9    # parameters: below, MEASURED_TYPES types on EVAL_CHUNKS chunks; above, one type on one chunk
MEASURED_TYPES = 3   # plain types quantized and measured, the largest that fit
EVAL_CHUNKS = 2      # × 512 calibration tokens scored per candidate, held out of the importance matrix
GROUPS = {"token_embd": r"^token_embd\.weight$", "output": r"^output\.weight$",
          "attn_q": r"\.attn_q\.weight$", "attn_k": r"\.attn_k\.weight$", "attn_v": r"\.attn_v\.weight$",
          "attn_output": r"\.attn_output\.weight$", "ffn_up": r"\.ffn_up\.weight$",
          "ffn_down": r"\.ffn_down\.weight$"}
SLACK = 32 * 1024    # the dry run prints MiB to two decimals and pads tensors otherwise: this close may fit
HIGHER = {"q8_0": None, "q6_k": "q8_0", "q5_k_m": "q8_0", "q5_k_s": "q8_0", "q5_0": "q8_0"}  # else q6_k
FILLER = "q8_0"      # the higher file's type for groups that are not probed: quick to write, never read


@dataclass
class Chosen:
    outtype: str
    overrides: list[Override]
    record: dict = field(default_factory=dict)
    path: Path | None = None  # the measured file, to be moved into place (None: f16 fits, nothing chosen)


class _Scorer:
    """KL of a candidate GGUF against the source's own fp32 logits (run block by block) on held-aside calibration
    chunks."""

    def __init__(self, source_dir: Path, chunks: int):
        from glmkit.runtimes.logits import logits

        from . import blockwise
        from .calibration import token_chunks

        self.chunks = token_chunks(source_dir, "embedded", 10**6)[-EVAL_CHUNKS:][:chunks]
        self.logits = logits
        self.ref = blockwise.run(source_dir, self.chunks, logits=True) or []

    def kl(self, path: Path) -> float:
        from .verify import compare

        got = np.concatenate([self.logits(path, c) for c in self.chunks])
        return compare(np.concatenate(self.ref), got, "candidate").mean_kl

    @property
    def tokens(self) -> int:
        return sum(len(c) for c in self.chunks)


def choose_gguf(streamer, max_bytes: int, imatrix: dict | None, source_dir: Path, parameters: int, stage: Path,
                quiet: bool = False) -> Chosen:
    """`streamer`: gguf_stream.Streamer over the source; every candidate is quantized from the source as it
    streams (no f16 file), and scored against the source run block by block in `source_dir`."""
    t0 = time.perf_counter()
    if streamer.f16_bytes <= max_bytes:  # nothing to give up: the unquantized file fits
        record = {"max_bytes": max_bytes, "chosen": "f16", "chosen_bytes": streamer.f16_bytes, "chosen_kl": 0.0,
                  "measured": [], "seconds": 0.0}
        return Chosen("f16", [], record)
    sizes = {}
    for name in gguf_types.QUANTIZED:
        if gguf_types.TYPES[name].needs_imatrix and imatrix is None:
            continue
        sizes[name] = streamer.planned_bytes(name, imatrix=imatrix)
    fitting = sorted((n for n in sizes if sizes[n] <= max_bytes + SLACK), key=lambda n: -sizes[n])
    if not fitting:
        smallest = min(sizes, key=lambda n: sizes[n])
        raise GlmkitError(f"--max-size {human(max_bytes)}: the smallest GGUF of this model is {smallest} at about "
                          f"{human(sizes[smallest])}; give at least that")
    broad = parameters < BROAD_BELOW
    n_types, n_chunks = (MEASURED_TYPES, EVAL_CHUNKS) if broad else (1, 1)
    t = time.perf_counter()
    scorer = _Scorer(source_dir, n_chunks)
    steps = {"reference": round(time.perf_counter() - t, 1)}
    measured: list[dict] = []

    def measure(path: Path, row: dict) -> dict:
        """Score a written candidate; one over the size is deleted unscored."""
        t = time.perf_counter()
        row["bytes"], row["kl"] = path.stat().st_size, None
        if row["bytes"] <= max_bytes:
            row["kl"] = round(scorer.kl(path), 6)
        row["seconds"] = round(row.get("seconds", 0) + time.perf_counter() - t, 1)
        measured.append(row)
        return row

    with progress.task(f"--max-size {human(max_bytes)}: measuring recipes", total=None, quiet=quiet):
        files: dict[str, Path] = {}
        plain: list[dict] = []
        for name in fitting:  # largest first, until n_types have really fit
            t, files[name] = time.perf_counter(), stage / f"{name}.gguf"
            streamer.write(files[name], name, imatrix=imatrix)
            row = measure(files[name], {"recipe": name, "outtype": name, "overrides": [],
                                        "seconds": time.perf_counter() - t})
            plain.append(row)
            if row["kl"] is None:
                files.pop(name).unlink()
            if sum(r["kl"] is not None for r in plain) == n_types:
                break
        best = min((r for r in plain if r["kl"] is not None), key=lambda r: r["kl"], default=None)
        if best is None:
            raise GlmkitError(f"--max-size {human(max_bytes)}: no measured type fit (llama.cpp's sizes exceeded "
                              "its dry run); give a little more room")
        for name in [n for n in files if n != best["outtype"]]:
            files.pop(name).unlink()
        chosen_row, chosen_path = best, files[best["outtype"]]
        higher = HIGHER.get(best["outtype"], "q6_k")
        probed: list[str] = []  # groups whose raise adds bytes (some are at the higher type already) and fits
        for g in GROUPS:
            planned = higher and streamer.planned_bytes(best["outtype"], imatrix=imatrix,
                                                        overrides=[Override(GROUPS[g], higher)])
            if planned and sizes[best["outtype"]] + SLACK < planned <= max_bytes + SLACK:  # beyond rounding
                probed.append(g)
        if probed and higher is not None:
            t, donor = time.perf_counter(), stage / f"{higher}.gguf"
            streamer.write(donor, higher, imatrix=imatrix,
                           overrides=[Override(GROUPS[g], FILLER) for g in GROUPS if g not in probed])
            steps[f"{higher} for the probes"] = round(time.perf_counter() - t, 1)

            def spliced(groups: list[str], path: Path, scored: dict | None = None) -> dict:
                t = time.perf_counter()
                splice(chosen_path, donor, [GROUPS[g] for g in groups], path)
                if scored:  # this very file was measured before
                    return scored
                label = f"{best['outtype']} + {', '.join(groups)} {higher}"
                return measure(path, {"recipe": label, "outtype": best["outtype"],
                                      "overrides": [str(Override(GROUPS[g], higher)) for g in groups],
                                      "seconds": time.perf_counter() - t})

            gains, probe, single = [], stage / "probe.gguf", {}
            for group in probed:
                row = single[group] = spliced([group], probe)
                extra, saved = row["bytes"] - best["bytes"], best["kl"] - (row["kl"] if row["kl"] is not None else 1e9)
                if extra > 0 and saved > 0:
                    gains.append((group, extra, saved))
            picked = _best_subset(gains, max_bytes - best["bytes"])
            if picked:
                mix = spliced(picked, probe, single[picked[0]] if len(picked) == 1 else None)
                if mix["kl"] is not None and mix["kl"] < best["kl"]:
                    chosen_row, chosen_path = mix, stage / "chosen.gguf"
                    probe.replace(chosen_path)
                    files.pop(best["outtype"]).unlink()
            probe.unlink(missing_ok=True)
            donor.unlink()
    record = {"max_bytes": max_bytes, "chosen": chosen_row["recipe"], "chosen_bytes": chosen_row["bytes"],
              "chosen_kl": chosen_row["kl"],
              "scored_on": f"KL against the fp32 source over {scorer.tokens} calibration tokens (not held out)",
              "breadth": {"types_measured": n_types, "scored_tokens": scorer.tokens},
              "planned_bytes": sizes, "measured": measured, "steps_seconds": steps,
              "seconds": round(time.perf_counter() - t0, 1)}
    _show(record, quiet)
    overrides = [Override.parse(o) for o in chosen_row["overrides"]]
    return Chosen(chosen_row["outtype"], overrides, record, chosen_path)


# llama.cpp's working memory beside weights and KV: the logits of a 512-token batch (4 bytes × vocabulary) and a
# fixed allowance for compute buffers and the process itself
BATCH_LOGITS = 512
RUNTIME_BYTES = 160 * 2**20


def memory_budget(ckpt, memory_spec: str | int, n_ctx: int) -> dict:
    """How `--memory` splits for checkpoint `ckpt`: the f16 KV cache of n_ctx tokens, the engine's working memory,
    and what is left for the file's weights (an estimate; the manifest records it)."""
    from glmkit.runtimes.context import kv_bytes_per_token
    from glmkit.sources.remap import chatglm_to_glm_config

    from .sizes import parse_size

    memory = parse_size(memory_spec, "--memory")
    config = ckpt.config if ckpt.family.native else chatglm_to_glm_config(ckpt.config)
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    kv = int(kv_bytes_per_token(config["num_hidden_layers"], config.get("num_key_value_heads", heads), head_dim)
             * n_ctx)
    runtime = RUNTIME_BYTES + 4 * BATCH_LOGITS * config["vocab_size"]
    weights = memory - kv - runtime
    if weights <= 0:
        raise GlmkitError(f"--memory {human(memory)} with --n-ctx {n_ctx}: the KV cache ({human(kv)}) and "
                          f"llama.cpp's working memory ({human(runtime)}) leave nothing for the weights; give more "
                          "memory or a smaller --n-ctx")
    return {"memory": memory, "n_ctx": n_ctx, "kv_cache_f16": kv, "runtime": runtime, "weights": weights}


def _best_subset(gains: list[tuple[str, int, float]], room: int) -> list[str]:
    """The groups whose measured KL savings add up to the most within `room` bytes: a knapsack over at most
    len(GROUPS) items, solved exactly. Bytes add up exactly (tensors quantize independently); savings are
    assumed to, and the mix is measured before it is kept."""
    best, best_saved = [], 0.0
    for mask in range(1, 1 << len(gains)):
        items = [g for i, g in enumerate(gains) if mask >> i & 1]
        if sum(e for _, e, _ in items) <= room and sum(s for _, _, s in items) > best_saved:
            best, best_saved = [g for g, _, _ in items], sum(s for _, _, s in items)
    return best


def _show(record: dict, quiet: bool) -> None:
    if quiet:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"--max-size {human(record['max_bytes'])}: recipes measured ({record['scored_on']})")
    for col in ("recipe", "bytes", "KL", ""):
        table.add_column(col, justify="right" if col in ("bytes", "KL") else "left")
    for r in record["measured"]:
        table.add_row(r["recipe"], f"{r['bytes']:,}", "over the size" if r["kl"] is None else f"{r['kl']:.5f}",
                      "← chosen" if r["recipe"] == record["chosen"] else "")
    Console(stderr=True).print(table)


# OpenVINO: recipes from most to least faithful, as measured on glm4-tiny (docs/quantization.md); the first whose
# directory fits is written. Each rung is compression settings on top of the profile's (GPTQ where int4).
OPENVINO_LADDER: tuple[tuple[str, dict], ...] = (
    ("int8", {"weight_format": "int8"}),
    ("int4 GPTQ g32 ratio 0.8", {"group_size": 32, "ratio": 0.8}),
    ("int4 GPTQ g64 ratio 0.8", {"group_size": 64, "ratio": 0.8}),
    ("int4 GPTQ g128 ratio 0.8", {"group_size": 128, "ratio": 0.8}),
    ("int4 GPTQ g32 ratio 1.0 (default)", {}),
    ("int4 GPTQ g64 ratio 1.0", {"group_size": 64}),
    ("int4 GPTQ g128 ratio 1.0", {"group_size": 128}),
    ("int4 GPTQ g32, embeddings int4", {"all_layers": True}),
    ("int4 GPTQ g128, embeddings int4", {"group_size": 128, "all_layers": True}),
    ("int4 GPTQ sym channel-wise, embeddings int4", {"group_size": -1, "sym": True, "all_layers": True}),
)


def openvino_estimate(config: dict, settings: dict) -> int:
    """Bytes of openvino_model.bin with these settings, from the shapes alone: int4 groups carry an f16 scale and
    a u4 zero point (asym), int8 rows an f16 scale and a u8 zero point; embeddings and lm_head int8 unless all
    layers; `ratio` of the transformer weights in int4 and the rest int8. Within 0.5 % on glm4-tiny."""
    h, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    kv = config.get("num_key_value_heads", heads)
    shapes = [(heads * head_dim, h), (kv * head_dim, h), (kv * head_dim, h), (h, heads * head_dim),
              (2 * config["intermediate_size"], h), (h, config["intermediate_size"])]
    linear = layers * sum(o * i for o, i in shapes)
    rows = layers * sum(o for o, _ in shapes)
    embed = 2 * vocab * h  # token embeddings and lm_head (untied in GLM-4)

    def int8(params, out_rows):
        return params + out_rows * 3

    def int4(params, out_rows, width):
        group = width if settings["group_size"] == -1 else settings["group_size"]
        groups = params // group
        return params // 2 + groups * (2 if settings["sym"] else 2.5)

    if settings["weight_format"] == "int8":
        weights = int8(linear, rows) + int8(embed, 2 * vocab)
    else:
        share = settings["ratio"]
        weights = share * int4(linear, rows, h) + (1 - share) * int8(linear, rows)
        weights += int4(embed, 2 * vocab, h) if settings["all_layers"] else int8(embed, 2 * vocab)
    norms_and_biases = layers * (4 * h + (heads + 2 * kv) * head_dim) * 4 + h * 4
    return int(weights + norms_and_biases)


def choose_openvino(config: dict, max_bytes: int, export, other: int = 0,
                    quiet: bool = False) -> tuple[dict, Path, dict]:
    """Walk OPENVINO_LADDER and keep the first rung whose directory fits. `export(overrides) -> (settings, dir)`
    writes one candidate; a rung whose estimate (its .bin, plus the other files of the first candidate written)
    is over is skipped without exporting; `other` guesses the files beside the .bin until then. Returns
    (settings, the candidate's directory, the manifest record)."""
    t0 = time.perf_counter()
    rows: list[dict] = []
    for label, overrides in OPENVINO_LADDER:
        settings, out = export(overrides, dry=True)
        estimate = openvino_estimate(config, settings) + other
        row: dict = {"recipe": label, "estimated_bytes": estimate}
        rows.append(row)
        if estimate > max_bytes * 1.01:
            continue
        t = time.perf_counter()
        settings, out = export(overrides, dry=False)
        files = [f for f in out.iterdir() if f.is_file()]
        row["bytes"], row["seconds"] = sum(f.stat().st_size for f in files), round(time.perf_counter() - t, 1)
        other = row["bytes"] - (out / "openvino_model.bin").stat().st_size
        if row["bytes"] <= max_bytes:
            record = {"max_bytes": max_bytes, "chosen": label, "chosen_bytes": row["bytes"],
                      "ladder": "docs/quantization.md, measured on glm4-tiny", "tried": rows,
                      "seconds": round(time.perf_counter() - t0, 1)}
            progress.say(f"--max-size {human(max_bytes)}: {label} ({human(row['bytes'])}); larger recipes "
                         f"passed over: {', '.join(r['recipe'] for r in rows[:-1]) or 'none'}", quiet)
            return settings, out, record
        import shutil

        shutil.rmtree(out)
    smallest = rows[-1].get("bytes", rows[-1]["estimated_bytes"])
    raise GlmkitError(f"--max-size {human(max_bytes)}: even {OPENVINO_LADDER[-1][0]} is about {human(smallest)}; "
                      "give more room, or --to gguf, whose 2-3 bit types are smaller")
