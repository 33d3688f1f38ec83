"""glm-convert: a thin command-line wrapper over glmkit.convert's functions (same names, same arguments)."""

from __future__ import annotations

import argparse
import sys

from glmkit.glm4 import families
from glmkit.glm4.errors import CONVERT_STACK, GlmkitError, require

TARGETS = ("hf", "openvino", "gguf")
QUANTIZED = ("q8_0 q6_k q5_k_m q5_k_s q5_0 q4_k_m q4_k_s q4_0 iq4_nl iq4_xs q3_k_l q3_k_m q3_k_s iq3_m iq3_s "
             "iq3_xs iq3_xxs q2_k q2_k_s iq2_m iq2_s iq2_xs iq2_xxs iq1_m iq1_s").split()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="glm-convert",
        description="Convert a GLM-4 checkpoint (local dir, Hugging Face id, glm4-tiny, synthetic:<family>:<shape>) "
                    "and check the result against its source.",
        epilog="families: " + "; ".join(f"{f.name} ({', '.join(f.architectures)}: {', '.join(f.checkpoints)})"
                                        for f in families.FAMILIES.values())
               + ". exit codes: 0 ok, 2 bad input, 3 verification failed (output kept at OUT.rejected), 130 "
                 "interrupted",
    )
    p.add_argument("src", nargs="?", help="checkpoint directory, hub id (THUDM/GLM-4-9B-0414), glm4-tiny, or "
                                          "synthetic:<glm4|glm|chatglm>:<tiny|bench|glm-4-9b> or "
                                          "synthetic:glm4v:<tiny|glm-4v-9b>")
    p.add_argument("--to", choices=TARGETS, default="hf", help="output format (default: hf)")
    p.add_argument("-o", "--output", help="output path (default: ./NAME-<format>)")
    p.add_argument("--info", metavar="OUT", help="print the manifest of an output glmkit made, and exit")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--allow-pickle", action="store_true", help="read pickled *.bin weights (sources you trust)")
    p.add_argument("--revision", help="hub revision (branch, tag or commit)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--rope-scaling", metavar="yarn:FACTOR",
                   help="YaRN long-context scaling, e.g. yarn:4 (GLM-4-0414: 32K native → 128K), any target")
    ov = p.add_argument_group("openvino")
    ov.add_argument("--weight-format", choices=("fp16", "int8", "int4"), default="int4")
    sym = ov.add_mutually_exclusive_group()
    sym.add_argument("--sym", dest="sym", action="store_true", default=None, help="symmetric int4/int8 weights")
    sym.add_argument("--asym", dest="sym", action="store_false", help="asymmetric weights (zero points)")
    ov.add_argument("--group-size", type=int, help="int4 group size; -1 = channel-wise (profile default)")
    ov.add_argument("--ratio", type=float, help="share of layers in int4, the rest int8 (profile default)")
    ov.add_argument("--all-layers", action="store_true", help="compress embeddings and lm_head to int4 too")
    ov.add_argument("--awq", action="store_true", help="activation-aware int4 (data-aware)")
    ov.add_argument("--scale-estimation", action="store_true", help="data-aware scale estimation")
    ov.add_argument("--gptq", action="store_true", default=None,
                    help="GPTQ weight correction (data-aware; on by default for int4 on cpu/gpu)")
    ov.add_argument("--data-free", action="store_true",
                    help="int4 without calibration: THUDM's recipe (asym, group 128, ratio 0.8)")
    ov.add_argument("--dataset", help="calibration text: a UTF-8 file, or 'embedded' (glmkit's calibration text, "
                                      "never the held-out text verification scores)")
    ov.add_argument("--num-samples", type=int, help="calibration samples (default 64)")
    ov.add_argument("--vision-format", choices=("fp16", "int8", "w8a8"),
                    help="GLM-4V's vision tower: fp16, int8 weights, or int8 weights and activations (w8a8, "
                         "calibrated on pictures); default fp16 with --weight-format fp16, else int8")
    ov.add_argument("--vision-calibration", metavar="DIR",
                    help="w8a8's calibration pictures: a folder of images (default: 8 generated pictures)")
    ov.add_argument("--profile", choices=("cpu", "gpu", "npu"), default="cpu", help="target device defaults")
    gg = p.add_argument_group("gguf")
    gg.add_argument("--outtype", default="f16", metavar="TYPE",
                    help="GGUF type: f32 f16 bf16, or through llama.cpp's own quantizer " + " ".join(QUANTIZED)
                         + " (default f16)")
    gg.add_argument("--imatrix", metavar="FILE|embedded|TEXT_FILE",
                    help="importance matrix: a llama.cpp imatrix (.gguf or .dat), or calibration text to compute "
                         "one from ('embedded': glmkit's, never the held-out text)")
    gg.add_argument("--save-imatrix", metavar="FILE.gguf", help="also write the computed importance matrix in "
                                                                 "llama.cpp's format (for llama-quantize --imatrix)")
    gg.add_argument("--calibration-chunks", type=int, default=16, metavar="N",
                    help="512-token calibration chunks for the importance matrix (default 16)")
    gg.add_argument("--tensor-type", action="append", default=[], metavar="PATTERN=TYPE",
                    help="per-tensor type, as llama-quantize's: tensors whose name PATTERN (a regex) matches get "
                         "TYPE, e.g. attn_v=q8_0 (repeatable)")
    p.add_argument("--max-size", metavar="SIZE",
                   help="the largest output allowed (2500000, 2.5MB, 4.5GB): glmkit measures recipes and writes "
                        "the best that fits")
    p.add_argument("--method", choices=("rtn", "autoround"), default="rtn",
                   help="rounding: rtn (llama.cpp's / NNCF's, default) or autoround (Intel's AutoRound, tuned on "
                        "calibration text; gguf k-quants)")
    p.add_argument("--iters", type=int, help="AutoRound's tuning steps (default 50; 0: its optimized rounding)")
    p.add_argument("--memory", metavar="SIZE", help="memory the model may use when it runs (weights + KV cache of "
                                                    "--n-ctx tokens + runtime): the file gets what is left")
    p.add_argument("--n-ctx", type=int, default=4096, help="context the --memory budget keeps room for (4096)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the check against the source (openvino, gguf)")
    return p


def _info(path: str) -> int:
    from glmkit.common import manifest

    data = manifest.read(path)
    if data is None:
        raise GlmkitError(f"{path}: no glmkit manifest (glmkit.json, or NAME.glmkit.json beside a .gguf); "
                          "it was not made by glmkit")
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(path), show_header=False)
    for key, value in _flatten(data):
        table.add_row(key, value)
    Console().print(table)
    return 0


def _flatten(data: dict, prefix: str = ""):
    """Nested manifest entries as (dotted.key, readable value) rows; tool versions on one line."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key == "tools" and isinstance(value, dict):
            yield name, ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, dict):
            yield from _flatten(value, name + ".")
        elif isinstance(value, float):
            yield name, f"{value:.2%}" if key in ("top1_agreement", "threshold") else f"{value:.6g}"
        elif isinstance(value, int) and not isinstance(value, bool) and ("bytes" in key or "parameters" in key):
            yield name, f"{value:,}"
        else:
            yield name, "—" if value is None else str(value)


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.info:
            return _info(args.info)
        require(CONVERT_STACK, "glm-convert")
        from . import gguf, hf, openvino

        if not args.src:
            parser.error("SRC is required (or --info OUT)")
        common = dict(force=args.force, allow_pickle=args.allow_pickle, revision=args.revision, quiet=args.quiet,
                      rope_scaling=args.rope_scaling)
        if args.to == "hf":
            out = hf.to_hf(args.src, args.output, **common)
        elif args.to == "gguf":
            out = gguf.to_gguf(args.src, args.output, outtype=args.outtype, verify=args.verify,
                               imatrix=args.imatrix, save_imatrix=args.save_imatrix,
                               calibration_chunks=args.calibration_chunks, tensor_types=tuple(args.tensor_type),
                               max_size=args.max_size, memory=args.memory, n_ctx=args.n_ctx, method=args.method,
                               iters=args.iters, dataset=args.dataset, **common)
        else:
            out = openvino.to_openvino(
                args.src, args.output, weight_format=args.weight_format, sym=args.sym, group_size=args.group_size,
                ratio=args.ratio, all_layers=args.all_layers, awq=args.awq, scale_estimation=args.scale_estimation,
                gptq=args.gptq, dataset=args.dataset, num_samples=args.num_samples, profile=args.profile,
                data_free=args.data_free, max_size=args.max_size, memory=args.memory, n_ctx=args.n_ctx,
                method=args.method, vision_format=args.vision_format,
                vision_calibration=args.vision_calibration, verify=args.verify, **common)
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
