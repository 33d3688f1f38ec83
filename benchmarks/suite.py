"""glm-bench ci: a ready benchmark suite and regression gate for CI.

It converts the embedded models (glm4-tiny: real text, meaningful perplexity; synthetic:glm4:bench: GLM-4's real
proportions at 0.47 B, long enough timings) to the formats people run, benchmarks them beside the raw engines
and the transformers reference, writes JSON, CSV, Markdown and PNG into OUT, and compares with the baseline
committed in the repository: exit 1 on a regression beyond noise.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from glmkit.common import progress
from glmkit.convert import GlmkitError

from . import compare, report
from .run import run

BASELINE = Path(__file__).parent / "baselines" / "ci.json"

# (reference source, [(artifact name, converter, options)])
SUITE: list[tuple[str, list[tuple[str, str, dict]]]] = [
    ("glm4-tiny", [("tiny-int4", "openvino", {"weight_format": "int4"}),
                   ("tiny-q4_k_m", "gguf", {"outtype": "q4_k_m"})]),
    ("synthetic:glm4:bench", [("bench-int8", "openvino", {"weight_format": "int8"}),
                              # random weights: speed only, so the data-free recipe the baseline measured
                              ("bench-int4", "openvino", {"weight_format": "int4", "data_free": True}),
                              ("bench-q8_0", "gguf", {"outtype": "q8_0"}),
                              ("bench-q4_k_m", "gguf", {"outtype": "q4_k_m"})]),
]
# glm4-tiny decodes a token in under a millisecond: its timings are scheduling noise, its quality is the signal.
QUALITY_ONLY = {"glm4-tiny"}
SETTINGS: dict = {"prompt_lengths": (128,), "gen": 32, "reps": 5, "warmup": 1, "interleave": True}


def _convert(src: str, name: str, to: str, options: dict, work: Path, quiet: bool) -> Path:
    from glmkit.convert import to_gguf, to_openvino

    out = work / (f"{name}.gguf" if to == "gguf" else name)
    if out.exists():
        return out
    # Verification is the converters' job and their tests'; the suite measures speed and quality itself.
    convert = to_gguf if to == "gguf" else to_openvino
    return convert(src, out, verify=False, quiet=quiet, **options)


def merge(parts: list[dict]) -> dict:
    """One result file from several runs of the same session (one per reference model)."""
    data = dict(parts[0])
    data["results"] = [r for p in parts for r in p["results"]]
    data["settings"] = {**parts[0]["settings"], "reference": [p["settings"]["reference"] for p in parts]}
    return data


def ci(out_dir: str | Path = "bench-ci", baseline: str | Path | None = BASELINE, max_regression: float = 0.10,
       work: str | Path | None = None, update_baseline: bool = False, absolute: bool = False, quiet: bool = False):
    """Run the suite; returns (results, findings against the baseline or None when there is none).

    By default the gate judges what a shared CI machine can judge: in-run ratios (each config against the
    reference and against its raw engine, repetitions interleaved across configs) and quality. `absolute` also
    judges tokens/s and TTFT, for a dedicated benchmark machine: on this project's 2-core VM two runs of the same
    commit moved llama.cpp's prefill by up to 34 %."""
    out_dir = Path(out_dir)
    baseline = Path(baseline) if baseline else None
    if baseline and not update_baseline and not baseline.is_file():
        raise GlmkitError(f"baseline {baseline} not found; pass --baseline FILE, or --update-baseline to make it")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="glm-bench-ci-") as tmp:
        work = Path(work) if work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        parts = []
        for reference, artifacts in SUITE:
            models = []
            for name, to, options in artifacts:
                progress.say(f"converting {reference} → {name}", quiet)
                models.append(str(_convert(reference, name, to, options, work, quiet)))
            part = run(models, reference=reference, quiet=quiet, **SETTINGS)
            if reference in QUALITY_ONLY:
                for r in part["results"]:
                    r["gate"] = "quality"
            parts.append(part)
    data = merge(parts)
    data["settings"]["suite_seconds"] = round(time.perf_counter() - t0, 1)
    report.write_reports(data, out_dir)
    if update_baseline and baseline is not None:
        report.save_results(data, baseline)
        return data, None
    if baseline is None:
        return data, None
    base = report.load_results(baseline)
    findings = compare.compare(base, data, max_regression, absolute)
    refusal = compare.speedup_refusal(base, data)
    report.write_text(out_dir / "compare.txt",
                      "\n".join(([refusal] if refusal else []) + [f.line() for f in findings]) + "\n")
    return data, findings
