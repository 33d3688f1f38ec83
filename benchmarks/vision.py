"""glm-bench vision: a GLM-4V artifact's image path — image encode ms, TTFT with the image, decode t/s, peak memory,
and its quality against the source.

Each repetition is cold: a new image (so the vision tower runs) and an empty KV, then a greedy answer of `gen`
tokens. Quality is the conversion's own verification record (an image prompt's logits against transformers and the
torch vision tower), read from the artifact's manifest: measured once, at conversion, against the source.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from glmkit.glm4.errors import GlmkitError


def _image(i: int):
    """A different picture per repetition (shapes and a word), at GLM-4V's native 1120 px."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (1120, 1120), (255 - 9 * i % 255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.ellipse((100 + 10 * i, 120, 500, 520), fill="red")
    draw.rectangle((600, 200, 1000, 900), fill="blue")
    draw.text((200, 900), f"GLM {i}", fill="black")
    return image


def run(model: str, reps: int = 3, gen: int = 32, threads: int | None = None) -> dict:
    from glmkit.runtimes import GenerationConfig, load
    from glmkit.runtimes.kinds import kind_of

    if not kind_of(model).capabilities.images:
        raise GlmkitError(f"{model}: glm-bench vision takes a GLM-4V OpenVINO IR (glm-convert THUDM/glm-4v-9b "
                          "--to openvino)")
    rows = []
    with load(model, threads=threads) as rt:
        config = GenerationConfig(max_new_tokens=gen, ignore_eos=True)
        for i in range(reps + 1):  # the first run warms the engine up and is not counted
            rt.reset_cache()
            msgs = [{"role": "user", "content": [{"type": "image", "image": _image(i)},
                                                 {"type": "text", "text": "Describe this picture."}]}]
            r = rt.generate(msgs, config)
            if i:
                rows.append({"image_encode_ms": r.engine["image_encode_ms"], "ttft_ms": r.ttft_ms,
                             "decode_tps": r.decode_tps, "prompt_tokens": r.prompt_tokens,
                             "peak_rss_mb": r.peak_rss_mb})
    manifest = Path(model) / "glmkit.json"
    verification = json.loads(manifest.read_text())["verification"] if manifest.is_file() else {}
    med = {k: statistics.median(r[k] for r in rows) for k in ("image_encode_ms", "ttft_ms", "decode_tps")}
    return {"model": str(model), "reps": reps, "gen": gen, **med, "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
            "prompt_tokens": rows[0]["prompt_tokens"], "runs": rows,
            "quality": {k: verification.get(k) for k in ("precision", "top1_agreement", "mean_kl", "tokens",
                                                         "skipped") if k in verification}}


def to_markdown(data: dict) -> str:
    q = data["quality"]
    quality = (f"top-1 {q['top1_agreement']:.1%}, KL {q['mean_kl']:.4f} over {q['tokens']} tokens ({q['precision']})"
               if "top1_agreement" in q else q.get("skipped", "not recorded"))
    return "\n".join([
        f"## glm-bench vision · {Path(data['model']).name}", "",
        "| image encode ms | TTFT with the image ms | decode t/s | peak RSS MB | quality against the source |",
        "|---|---|---|---|---|",
        f"| {data['image_encode_ms']:.1f} | {data['ttft_ms']:.1f} | {data['decode_tps']:.1f} | "
        f"{data['peak_rss_mb']:.0f} | {quality} |", "",
        f"Medians of {data['reps']} cold runs (a new image, an empty KV), {data['gen']} greedy tokens each."]) + "\n"


def plot(data: dict, path) -> None:
    return None
