"""A GLM-4V IR's anonymous memory through one image turn and the next image: load, encode, prefill, encode, prefill.

Anonymous memory (RssAnon) is what the process allocated; the rest of its resident set is the memory-mapped IR,
which the kernel drops under pressure, so anonymous memory is what decides whether a laptop holds the model.
Sampled every 0.1 s in a thread; each phase prints its time, its peak and what it leaves held.

    python scripts/measure_glm4v_memory.py glm-4v-9b-ov-int4
"""

from __future__ import annotations

import argparse
import threading
import time


def anonymous_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 2**20
    return 0.0


class Peak:
    def __init__(self):
        self.peak = 0.0
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, anonymous_gib())
            time.sleep(0.1)

    def phase(self, name: str, fn, *args, **kwargs):
        self.peak = anonymous_gib()
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        print(f"{name}: {time.perf_counter() - t:.1f} s, peak {max(self.peak, anonymous_gib()):.2f} GiB, "
              f"then {anonymous_gib():.2f} GiB held", flush=True)
        return out


def picture(i: int, size: int):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (255 - 9 * i, 255, 255))
    ImageDraw.Draw(image).ellipse((size // 10 + 10 * i, size // 9, size // 2, size // 2), fill="red")
    return image


def main() -> None:
    from glmkit.glm4 import vision
    from glmkit.runtimes.glm4v import Glm4vIR
    from glmkit.runtimes.tokenizer import from_hf

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a GLM-4V OpenVINO IR directory")
    args = ap.parse_args()
    p = Peak()
    ir = p.phase("load", lambda: Glm4vIR(args.model))
    tok = from_hf(args.model)
    text = "<|user|>\n<|begin_of_image|><|endoftext|><|end_of_image|>Describe the image.<|assistant|>"
    ids = tok.encode("[gMASK]<sop>" + text)
    for turn in (1, 2):
        pixels = vision.preprocess(picture(turn, ir.image_size), ir.image_size)
        embeds, positions = ir.splice(ids, p.phase(f"encode {turn}", ir.image_features, pixels))
        ir.reset()
        p.phase(f"prefill {turn} ({embeds.shape[1]} embeddings)", ir.forward, embeds, positions, last=True)


if __name__ == "__main__":
    main()
