"""glm-bench: run benchmarks, render reports, and gate CI on performance regressions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from glmkit.convert import GlmkitError
from glmkit.glm4.errors import require


def _percent(text: str) -> float:
    return float(text.rstrip("%")) / 100 if text.endswith("%") else float(text)


def _lengths(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give token counts separated by commas, e.g. 128,512") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: prompt lengths must be at least 1")
    return values


def _quantize_defaults(engine: str) -> tuple[str, ...]:
    from .quantize import GGUF_DEFAULT, OPENVINO_DEFAULT

    return GGUF_DEFAULT if engine == "gguf" else OPENVINO_DEFAULT


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glm-bench", description="Benchmark GLM-4 artifacts made by glmkit.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="benchmark models (OpenVINO dirs, .gguf files, any glm-convert SRC)")
    r.add_argument("models", nargs="+")
    r.add_argument("--backends", default="auto", help="comma list: auto,openvino,llamacpp,transformers")
    r.add_argument("--prompt-lengths", type=_lengths, default=(128,), help="comma list of prompt lengths in tokens")
    r.add_argument("--gen", type=int, default=128, help="new tokens per repetition")
    r.add_argument("--reps", type=int, default=5)
    r.add_argument("--warmup", type=int, default=1)
    r.add_argument("--threads", type=int)
    r.add_argument("--kv-cache", help="KV-cache type for every model (llama.cpp f16/q8_0, OpenVINO f16/u8)")
    r.add_argument("--reference", help="HF source for the transformers reference (speed-up and quality)")
    r.add_argument("--no-quality", dest="quality", action="store_false")
    r.add_argument("--no-peers", dest="peers", action="store_false", help="skip the raw-engine runs")
    r.add_argument("--no-roofline", dest="roofline", action="store_false", help="skip the bandwidth measurement")
    r.add_argument("--interleave", action="store_true",
                   help="load all models at once and alternate their repetitions (steadier ratios, more memory)")
    r.add_argument("-o", "--output", default="results.json",
                   help="result JSON; .md, .csv and -decode/-quality.png are written beside it")
    r.add_argument("-q", "--quiet", action="store_true")
    r.add_argument("--speculative", metavar="prompt-lookup|draft:PATH",
                   help="instead: decode t/s with and without speculation on input-grounded edits and free text")
    r.add_argument("--draft-tokens", type=int, help="with --speculative: tokens proposed per step")
    r.add_argument("--ngram-size", type=int, help="with --speculative prompt-lookup: the longest n-gram matched")
    r.add_argument("--tasks", type=int, default=5, help="with --speculative: requests of each kind (default 5)")
    r.add_argument("--verification-cost", action="store_true",
                   help="with --speculative: also time a pass of k+1 tokens against one (the ceiling)")
    rep = sub.add_parser("report", help="print a result file as a Markdown table (or CSV); optionally plot it")
    rep.add_argument("results")
    rep.add_argument("--csv", action="store_true")
    rep.add_argument("--plots", metavar="DIR", help="write the PNG plots into DIR")
    c = sub.add_parser("compare", help="exit 1 when CURRENT regresses against BASELINE beyond noise")
    c.add_argument("baseline")
    c.add_argument("current")
    c.add_argument("--max-regression", type=_percent, default=0.10, help="e.g. 10%% (default)")
    c.add_argument("--absolute", action="store_true",
                   help="also judge absolute t/s and TTFT, same machine only (default: in-run ratios and quality)")
    ch = sub.add_parser("chat", help="TTFT per chat turn beside the engine's own chat path; latency by position")
    ch.add_argument("models", nargs="+", help="OpenVINO IR dirs or .gguf files")
    ch.add_argument("--turns", type=int, default=6, help="chat turns (0: skip the chat scenario)")
    ch.add_argument("--user-chars", type=int, default=700, help="characters per user message")
    ch.add_argument("--answer-tokens", type=int, default=32, help="answer budget per turn")
    ch.add_argument("--long-tokens", type=int, default=0,
                    help="also time one greedy answer of this many tokens: inter-token latency by position")
    ch.add_argument("--long-model", action="append", help="model for the long answer (default: the chat models)")
    ch.add_argument("--threads", type=int)
    ch.add_argument("-o", "--output", default="chat.json", help="result JSON; .md and .png are written beside it")
    sv = sub.add_parser("serve", help="N concurrent clients over HTTP against glm-serve (and llama.cpp's servers)")
    sv.add_argument("model", help="an OpenVINO IR dir or a .gguf file")
    sv.add_argument("--clients", type=_lengths, default=(1, 2, 4, 8), help="comma list, e.g. 1,2,4,8")
    sv.add_argument("--turns", type=int, default=3, help="streamed chat turns per client")
    sv.add_argument("--user-chars", type=int, default=300, help="characters per user message")
    sv.add_argument("--answer-tokens", type=int, default=32)
    sv.add_argument("--n-ctx", type=int, default=4096)
    sv.add_argument("--threads", type=int)
    sv.add_argument("--no-peers", dest="peers", action="store_false", help="skip llama-server and llama_cpp.server")
    sv.add_argument("--llama-server", metavar="PATH",
                    help="llama.cpp's llama-server binary for a GGUF (default: llama-server on PATH, if any)")
    sv.add_argument("--in-process", action="store_true",
                    help="also drive the runtime glm-serve serves from threads in this process (the engine, no HTTP)")
    sv.add_argument("--slots", type=int, help="generations each server runs at once (default: the most clients); "
                                             "fewer than clients measures over-subscription")
    sv.add_argument("--serve-flag", action="append", default=[], metavar="FLAG",
                    help="an extra glm-serve flag, e.g. --serve-flag=--cache-ram=0 (repeatable)")
    sv.add_argument("--vllm", nargs=2, metavar=("PYTHON", "HF_DIR"),
                    help="also vLLM (its venv's python) on HF_DIR, the same model as a --to hf output")
    sv.add_argument("-o", "--output", default="serve.json", help="result JSON; .md and .png are written beside it")
    sv.add_argument("-q", "--quiet", action="store_true")
    kv = sub.add_parser("kv", help="KV-cache types at length: bytes per 1K tokens and KL against an f32 cache")
    kv.add_argument("model", help="an OpenVINO IR dir or a .gguf file")
    kv.add_argument("--length", type=int, default=2048, help="tokens of held-out text")
    kv.add_argument("--kv-cache", help="comma list (default: llama.cpp f16,q8_0; OpenVINO f16,u8)")
    kv.add_argument("-o", "--output", default="kv.json", help="result JSON; .md and .png are written beside it")
    vi = sub.add_parser("vision", help="a GLM-4V IR: image encode ms, TTFT with an image, decode t/s, memory, quality")
    vi.add_argument("model", help="a GLM-4V OpenVINO IR dir")
    vi.add_argument("--reps", type=int, default=3)
    vi.add_argument("--gen", type=int, default=32, help="tokens per answer")
    vi.add_argument("--threads", type=int)
    vi.add_argument("-o", "--output", default="vision.json", help="result JSON; .md is written beside it")
    qz = sub.add_parser("quantize", help="a sweep of quantization recipes (GGUF and OpenVINO): KL, top-1, "
                                         "perplexity against size and decode speed, Pareto front marked")
    qz.add_argument("src", help="a glm-convert SRC small enough for its fp32 reference (glm4-tiny, a local dir)")
    qz.add_argument("--gguf", default=",".join(_quantize_defaults("gguf")),
                    help="comma list of llama.cpp types, TYPE+imatrix for an importance matrix ('' for none)")
    qz.add_argument("--openvino", default=",".join(_quantize_defaults("openvino")),
                    help="comma list of: int8, int4 (glmkit's default), int4-data-free, int4-optimum-default")
    qz.add_argument("--reps", type=int, default=3, help="decode repetitions per artifact")
    qz.add_argument("--gen", type=int, default=32)
    qz.add_argument("--tokens", type=int, default=1024, help="held-out tokens scored")
    qz.add_argument("--no-speed", dest="speed", action="store_false")
    qz.add_argument("--threads", type=int)
    qz.add_argument("--keep-artifacts", metavar="DIR", help="convert into DIR and reuse what is already there")
    qz.add_argument("-o", "--output", default="quantize.json",
                    help="result JSON; .md, .csv and .png are written beside it")
    qz.add_argument("-q", "--quiet", action="store_true")
    ev = sub.add_parser("eval", help="lm-evaluation-harness tasks on an artifact, through glm-serve (offline task "
                                     "files: benchmarks/tasks/)")
    ev.add_argument("model", help="an OpenVINO IR dir, a .gguf file or any glm-convert SRC")
    ev.add_argument("--tasks", required=True, help="comma list of lm-eval task YAML files")
    ev.add_argument("--python", help="an interpreter with lm-eval installed (default: this one)")
    ev.add_argument("--limit", type=int, help="documents per task (default: all)")
    ev.add_argument("--serve-flag", action="append", default=[], metavar="FLAG",
                    help="an extra glm-serve flag, e.g. --serve-flag=--n-ctx=2048 (repeatable)")
    ev.add_argument("-o", "--output", default="eval.json", help="result JSON; .md is written beside it")
    ev.add_argument("-q", "--quiet", action="store_true")
    ci = sub.add_parser("ci", help="the ready CI suite on the embedded models, gated on the committed baseline")
    ci.add_argument("-o", "--output", default="bench-ci", help="directory for JSON, Markdown, CSV, PNG")
    ci.add_argument("--baseline", help="result file to compare with (default: the one committed in glmkit)")
    ci.add_argument("--max-regression", type=_percent, default=0.10, help="e.g. 10%% (default)")
    ci.add_argument("--update-baseline", action="store_true", help="write this run as the new baseline")
    ci.add_argument("--absolute", action="store_true",
                    help="also judge absolute t/s and TTFT (a dedicated benchmark machine; default: ratios, quality)")
    ci.add_argument("--keep-artifacts", metavar="DIR", help="convert into DIR and reuse what is already there")
    ci.add_argument("-q", "--quiet", action="store_true")
    return p


def _scope(absolute: bool, base: dict, cur: dict) -> str:
    from .compare import same_machine, speedup_refusal

    refusal = speedup_refusal(base, cur)
    if not absolute:
        scope = "judging in-run ratios and quality (add --absolute for tokens/s and TTFT on a dedicated machine)"
    elif not same_machine(base, cur):
        scope = "different CPU or thread count: absolute figures shown, not judged"
    else:
        scope = "judging absolute figures, in-run ratios and quality"
    return scope + (f"\n{refusal}" if refusal else "")


def _print_findings(findings, max_regression: float, note: str = "") -> int:
    if not findings:
        raise GlmkitError("the two result files share no configuration to compare")
    if note:
        print(note)
    for f in findings:
        print(f.line())
    bad = [f for f in findings if f.regressed]
    print(f"{len(bad)} regression(s) beyond {max_regression:.0%} and noise" if bad else "no regression")
    return 1 if bad else 0


def _write(data: dict, out: Path, kind) -> int:
    """OUT.json, OUT.md and OUT.png of a scenario module (chat, serve) with to_markdown and plot."""
    import json

    from glmkit.common.atomic import write_text

    md = kind.to_markdown(data)
    written = [write_text(out, json.dumps(data, indent=2) + "\n"), write_text(out.with_suffix(".md"), md)]
    written += [p for p in [kind.plot(data, out.with_suffix(".png"))] if p]
    print(md)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    return 0


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import compare, plots, report
    from . import run as run_mod

    try:
        if args.cmd == "run" and args.speculative:
            from . import speculative

            if len(args.models) != 1 or args.backends != "auto":
                raise GlmkitError("--speculative measures one model on its own backend: give one MODEL")
            data = speculative.run(args.models[0], args.speculative, args.tasks, args.gen, threads=args.threads,
                                   draft_tokens=args.draft_tokens, ngram_size=args.ngram_size, quiet=args.quiet)
            if args.verification_cost:
                data["verification_cost"] = speculative.verification_cost(args.models[0], threads=args.threads)
            return _write(data, Path(args.output), speculative)
        if args.cmd == "run":
            data = run_mod.run(args.models, tuple(args.backends.split(",")),
                               args.prompt_lengths, args.gen, args.reps,
                               args.warmup, args.threads, args.reference, args.quality, peers=args.peers,
                               roofline=args.roofline, interleave=args.interleave, quiet=args.quiet,
                               kv_cache=args.kv_cache)
            out = Path(args.output)
            written = report.write_reports(data, out.parent, out.stem)
            print(report.to_markdown(data))
            print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
            return 0
        if args.cmd == "chat":
            from . import chat

            data = chat.run(args.models, args.turns, args.user_chars, args.answer_tokens, args.long_tokens,
                            args.long_model, threads=args.threads)
            return _write(data, Path(args.output), chat)
        if args.cmd == "serve":
            from . import serve

            data = serve.run(args.model, args.clients, args.turns, args.user_chars, args.answer_tokens, args.n_ctx,
                             args.threads, args.peers, args.quiet, tuple(args.vllm) if args.vllm else None,
                             slots=args.slots, serve_flags=tuple(args.serve_flag), llama_server=args.llama_server,
                             in_process=args.in_process)
            return _write(data, Path(args.output), serve)
        if args.cmd == "kv":
            from . import kv

            types = tuple(t for t in (args.kv_cache or "").split(",") if t) or None
            return _write(kv.run(args.model, args.length, types), Path(args.output), kv)
        if args.cmd == "quantize":
            from glmkit.common.atomic import write_text

            from . import quantize

            data = quantize.run(args.src, tuple(x for x in args.gguf.split(",") if x),
                                tuple(x for x in args.openvino.split(",") if x), args.keep_artifacts, args.reps,
                                args.gen, args.tokens, args.speed, args.threads, args.quiet)
            write_text(Path(args.output).with_suffix(".csv"), quantize.to_csv(data))
            return _write(data, Path(args.output), quantize)
        if args.cmd == "vision":
            from . import vision

            if args.reps < 1 or args.gen < 2:
                raise GlmkitError("--reps must be at least 1 and --gen at least 2")
            return _write(vision.run(args.model, args.reps, args.gen, args.threads), Path(args.output), vision)
        if args.cmd == "eval":
            from . import harness

            data = harness.evaluate(args.model, [t for t in args.tasks.split(",") if t], args.python, args.limit,
                                    serve_flags=tuple(args.serve_flag), quiet=args.quiet)
            return _write(data, Path(args.output), harness)
        if args.cmd == "report":
            data = report.load_results(args.results)
            print(report.to_csv(data) if args.csv else report.to_markdown(data), end="")
            if args.plots:
                require(("matplotlib",), "glm-bench report --plots", "plots")
                for path in plots.plots(data, args.plots, Path(args.results).stem):
                    print(f"wrote {path}", file=sys.stderr)
            return 0
        if args.cmd == "ci":
            from . import suite

            data, findings = suite.ci(args.output, args.baseline or suite.BASELINE, args.max_regression,
                                      args.keep_artifacts, args.update_baseline, args.absolute, args.quiet)
            print(report.to_markdown(data))
            print(f"wrote {args.output}/ (results.json, .md, .csv, -decode.png, -quality.png) in "
                  f"{data['settings']['suite_seconds']:.0f} s", file=sys.stderr)
            if findings is None:
                print(f"baseline written: {args.baseline or suite.BASELINE}")
                return 0
            base = report.load_results(args.baseline or suite.BASELINE)
            return _print_findings(findings, args.max_regression, _scope(args.absolute, base, data))
        base, cur = report.load_results(args.baseline), report.load_results(args.current)
        return _print_findings(compare.compare(base, cur, args.max_regression, args.absolute), args.max_regression,
                               _scope(args.absolute, base, cur))
    except GlmkitError as e:
        print(f"glm-bench: error: {e}", file=sys.stderr)
        return e.exit_code


def main() -> None:
    sys.exit(run())
