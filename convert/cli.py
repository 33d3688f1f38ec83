"""glm-convert: a thin command-line wrapper over glmkit.convert's functions (same names, same arguments)."""

from __future__ import annotations

import argparse
import sys

from .errors import GlmkitError

TARGETS = ("hf",)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="glm-convert",
        description="Convert a GLM-4 checkpoint (local dir, Hugging Face id, glm4-tiny, synthetic:<family>:<shape>).",
    )
    p.add_argument("src", help="checkpoint directory, hub id (THUDM/GLM-4-9B-0414), glm4-tiny, or "
                               "synthetic:<glm4|glm|chatglm>:<tiny|bench|glm-4-9b>")
    p.add_argument("--to", choices=TARGETS, default="hf", help="output format (default: hf)")
    p.add_argument("-o", "--output", help="output path (default: ./NAME-<format>)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read pickled *.bin weights (only for sources you trust)")
    p.add_argument("--revision", help="hub revision (branch, tag or commit)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return p


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import hf

    try:
        if args.to == "hf":
            out = hf.to_hf(args.src, args.output, force=args.force, allow_pickle=args.allow_pickle,
                           revision=args.revision, quiet=args.quiet)
    except GlmkitError as e:
        print(f"glm-convert: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("glm-convert: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(out)
    return 0


def main() -> None:
    sys.exit(run())
