"""What block-by-block int4 calibration costs for one decoder block of a real shape: NNCF's compression of the
block on its calibration inputs, the pass that makes the next block's inputs, and peak memory.

The whole conversion repeats this once a block (plus optimum-intel's data-free export and the write), so a 9B or
32B figure can be had in minutes, not hours. Peak anonymous memory is RssAnon + VmSwap sampled every 0.2 s (the
memory-mapped source's pages aside); peak RSS (ru_maxrss) includes them.

    python scripts/measure_int4_block.py ~/.cache/glmkit/synthetic/glm4-glm-4-9b-seed0 --num-samples 64
"""

from __future__ import annotations

import argparse
import json
import resource
import threading
import time
from pathlib import Path


def anonymous_bytes() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return sum(int(fields.get(k, "0 kB").split()[0]) * 1024 for k in ("RssAnon", "VmSwap"))


class _Stop(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="a native glm4 checkpoint folder (a synthetic shape's cache folder)")
    ap.add_argument("--num-samples", type=int, default=64)
    ap.add_argument("--group-size", type=int, default=32)
    args = ap.parse_args()

    from glmkit.convert import blockwise
    from glmkit.convert import openvino_blockwise as ob

    settings = dict(weight_format="int4", ratio=1.0, awq=False, gptq=True, scale_estimation=False, sym=False,
                    group_size=args.group_size, dataset="embedded", num_samples=args.num_samples)
    chunks = ob.calibration_chunks(Path(args.source), settings)
    peak = [0]

    def sample():
        while True:
            peak[0] = max(peak[0], anonymous_bytes())
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    times = {}

    def on_block(i, layer, hidden, rope):
        t = time.time()
        compiled, inputs, _ = ob._compress_block(layer, hidden, rope, settings)
        times["compress_s"] = round(time.time() - t, 1)
        t = time.time()
        for x in inputs:
            compiled(x)
        times["outputs_s"] = round(time.time() - t, 1)
        raise _Stop

    try:
        blockwise.run(args.source, chunks, on_block=on_block)
    except _Stop:
        pass
    print(json.dumps({"source": args.source, "num_samples": args.num_samples, "tokens": sum(map(len, chunks)),
                      **times, "peak_anon_gib": round(peak[0] / 2**30, 2),
                      "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))


if __name__ == "__main__":
    main()
