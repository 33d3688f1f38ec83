"""GLM-4V-9B's vision tower, each --vision-format, timed at its real width on slices of its depth.

The whole tower (63 layers, 4.5 B parameters) costs minutes per encode on a laptop and most of its RAM to
convert, so this builds the 9B-shape tower (synthetic.vision_config("glm-4v-9b"), seeded random weights: speed
does not depend on the values) with fewer layers, converts it as glm-convert does (openvino.convert_model, then
NNCF: int8 weights, or int8 weights and activations calibrated on generated pictures), and times one 1120-px
encode with the CPU's default settings. Two depths give the cost per layer and the fixed part (patch embedding,
conv, GLU projection); the full tower is their line at 63 layers. Calibration time is extrapolated the same way.

    python scripts/measure_vision_tower.py --layers 2 4 -o tower.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

FULL_LAYERS = 63


def _tower(layers: int):
    import torch

    from glmkit.convert import vision_tower
    from glmkit.sources import synthetic

    config = {**synthetic.SHAPES["glm-4v-9b"], "ffn_hidden_size": synthetic.SHAPES["glm-4v-9b"]["intermediate_size"],
              "vision_config": {**synthetic.vision_config("glm-4v-9b"), "num_hidden_layers": layers}}
    torch.manual_seed(0)
    tower = vision_tower.VisionTower(config).eval()
    with torch.no_grad():
        for p in tower.parameters():
            p.normal_(0.0, 0.02)
    return tower, config


def _convert(tower, xml: Path) -> None:
    import openvino as ov
    import torch

    example = torch.zeros(1, 3, 1120, 1120)
    with torch.no_grad():
        model = ov.convert_model(tower, example_input=example)
    ov.save_model(model, xml, compress_to_fp16=False)


def _encode_seconds(xml: Path, pixels, reps: int) -> float:
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU")
    compiled(pixels[0])  # first call: the CPU plugin's kernels are picked and warmed
    times = []
    for p in pixels[1:reps + 1]:
        t = time.perf_counter()
        compiled(p)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(layers: int, formats: list[str], reps: int, pictures: int) -> dict:
    import nncf
    import openvino as ov

    from glmkit.convert.openvino_glm4v import _quantize_activations, calibration_pixels

    tower, _ = _tower(layers)
    probe = calibration_pixels(None, 1120, reps + 1)[::-1]  # not the calibration pictures' order
    row: dict = {"layers": layers}
    with tempfile.TemporaryDirectory() as d:
        fp32 = Path(d) / "fp32.xml"
        _convert(tower, fp32)
        del tower
        for fmt in formats:
            xml = Path(d) / f"{fmt}.xml"
            t = time.perf_counter()
            if fmt == "int8":
                model = nncf.compress_weights(ov.Core().read_model(fp32), mode=nncf.CompressWeightsMode.INT8_ASYM)
                ov.save_model(model, xml, compress_to_fp16=False)
            elif fmt == "w8a8":
                ov.save_model(ov.Core().read_model(fp32), xml, compress_to_fp16=False)
                _quantize_activations(xml, calibration_pixels(None, 1120, pictures))
            else:
                ov.save_model(ov.Core().read_model(fp32), xml, compress_to_fp16=True)
            row[f"{fmt}_convert_s"] = round(time.perf_counter() - t, 1)
            row[f"{fmt}_encode_s"] = round(_encode_seconds(xml, probe, reps), 2)
            print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--formats", nargs="+", default=["fp16", "int8", "w8a8"])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--pictures", type=int, default=16, help="w8a8 calibration pictures (glm-convert's default)")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    rows = [measure(n, args.formats, args.reps, args.pictures) for n in args.layers]
    lo, hi = rows[0], rows[-1]
    full = {}
    for key in lo:
        if key != "layers":
            per_layer = (hi[key] - lo[key]) / (hi["layers"] - lo["layers"])
            full[key] = round(lo[key] + per_layer * (FULL_LAYERS - lo["layers"]), 1)
    result = {"rows": rows, "extrapolated_to_63_layers": full,
              "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["extrapolated_to_63_layers"]))


if __name__ == "__main__":
    main()
