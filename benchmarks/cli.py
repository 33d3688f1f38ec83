"""glm-bench: run benchmarks, render reports, and gate CI on performance regressions."""

from __future__ import annotations

import argparse
import sys

from glmkit.convert import GlmkitError


def _percent(text: str) -> float:
    return float(text.rstrip("%")) / 100 if text.endswith("%") else float(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glm-bench", description="Benchmark GLM-4 artifacts made by glmkit.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="benchmark models (OpenVINO dirs, .gguf files, any glm-convert SRC)")
    r.add_argument("models", nargs="+")
    r.add_argument("--backends", default="auto", help="comma list: auto,openvino,llamacpp,transformers")
    r.add_argument("--prompt-lengths", default="128", help="comma list of prompt lengths in tokens")
    r.add_argument("--gen", type=int, default=128, help="new tokens per repetition")
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--warmup", type=int, default=1)
    r.add_argument("--threads", type=int)
    r.add_argument("--reference", help="HF source for the transformers reference (speed-up and quality)")
    r.add_argument("--no-quality", dest="quality", action="store_false")
    r.add_argument("-o", "--output", default="results.json")
    rep = sub.add_parser("report", help="print a result file as a Markdown table (or CSV)")
    rep.add_argument("results")
    rep.add_argument("--csv", action="store_true")
    c = sub.add_parser("compare", help="exit 1 when CURRENT regresses against BASELINE beyond noise")
    c.add_argument("baseline")
    c.add_argument("current")
    c.add_argument("--max-regression", type=_percent, default=0.10, help="e.g. 10%% (default)")
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import compare, report
    from . import run as run_mod

    try:
        if args.cmd == "run":
            data = run_mod.run(args.models, tuple(args.backends.split(",")),
                               tuple(int(x) for x in args.prompt_lengths.split(",")), args.gen, args.reps,
                               args.warmup, args.threads, args.reference, args.quality)
            report.save_results(data, args.output)
            print(report.to_markdown(data))
            print(f"wrote {args.output}", file=sys.stderr)
            return 0
        if args.cmd == "report":
            data = report.load_results(args.results)
            print(report.to_csv(data) if args.csv else report.to_markdown(data), end="")
            return 0
        findings = compare.compare(report.load_results(args.baseline), report.load_results(args.current),
                                   args.max_regression)
        if not findings:
            raise GlmkitError("the two result files share no configuration to compare")
        for f in findings:
            print(f.line())
        bad = [f for f in findings if f.regressed]
        print(f"{len(bad)} regression(s) beyond {args.max_regression:.0%} and noise" if bad else "no regression")
        return 1 if bad else 0
    except GlmkitError as e:
        print(f"glm-bench: error: {e}", file=sys.stderr)
        return e.exit_code


def main() -> None:
    sys.exit(run())
