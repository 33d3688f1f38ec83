"""`--to openvino` for GLM-4V-9B: three IRs, as optimum-intel lays out the vision-language models it knows.

optimum-intel 1.27 has no GLM-4V export, so glmkit assembles one from its parts: the language model (remapped into
the glm layout, no remote code) and its text embeddings through optimum-intel's own inputs-embeds helpers — the
ones its VLM exports use: a stateful IR taking `inputs_embeds` and `position_ids` — and the vision tower as
glmkit's own torch module (vision_tower.py) through `openvino.convert_model`. A 16-bit checkpoint loads in its own
dtype with OpenVINO's 16-bit tracing patch, as optimum-intel's main_export does for text: the language model stays
memory-mapped, so GLM-4V-9B exports to int8/int4 on a 24 GB machine. NNCF compresses each: the language model
as asked, the text embeddings and the vision tower in int8 unless fp16 was asked. Verification runs an image
prompt through the IRs and through the source (transformers' model of the language part, the torch tower) and
compares the logits as for text.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from glmkit.common import progress
from glmkit.glm4 import families, vision
from glmkit.glm4.errors import GlmkitError
from glmkit.runtimes import glm4v as ir

from . import vision_tower

DATA_FREE = ("awq", "scale_estimation", "gptq", "dataset")


VISION_FORMATS = ("fp16", "int8", "w8a8")
# each calibration picture costs a full-precision encode; how these two were chosen: docs/vision.md
CALIBRATION_PICTURES = 8
SMOOTH_QUANT_ALPHA = 0.5  # NNCF's transformer default is 0.95
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


def vision_format(settings: dict) -> str:
    """The vision tower's precision: as asked (--vision-format), else fp16 with an fp16 language model, else int8
    weights."""
    return settings.get("vision_format") or ("fp16" if settings["weight_format"] == "fp16" else "int8")


def calibration_files(folder: str) -> list[Path]:
    """The pictures in a --vision-calibration folder, sorted by name; refuses a folder without any."""
    root = Path(folder)
    files = sorted(f for f in root.iterdir() if f.suffix.lower() in PICTURE_SUFFIXES) if root.is_dir() else []
    if not files:
        raise GlmkitError(f"--vision-calibration {folder}: no folder of pictures there (PNG, JPEG, WebP, GIF, BMP); "
                          "give a folder of images like the ones the model will see")
    return files


def calibration_pixels(folder: str | None, image_size: int, n: int = CALIBRATION_PICTURES) -> list[np.ndarray]:
    """Pixel values of the tower's calibration pictures: up to n images from the user's folder (sorted by name),
    or n generated pictures drawn as glm4v-tiny's training pictures are — never its held-out ones."""
    from glmkit.runtimes import images

    if folder:
        pictures = [images.read(str(f)).rgb for f in calibration_files(folder)[:n]]
    else:
        from glmkit.sources import pictures as generated

        pictures = generated.calibration(n)
    return [vision.preprocess(p, image_size) for p in pictures]


def vision_parameters(ckpt) -> int:
    """Parameters of the checkpoint's vision tower, from the safetensors headers (nothing loaded)."""
    from math import prod

    from glmkit.sources.checkpoint import safetensors_header

    return sum(prod(meta["shape"]) for f in ckpt.weight_files for name, meta in safetensors_header(f).items()
               if name.startswith(vision_tower.PREFIX))


def load_dtype(config: dict, weight_format: str):
    """The dtype the export loads the source in, chosen as optimum-intel's main_export chooses for text: a 16-bit
    checkpoint in its own dtype (fp16 when fp16 is asked), anything else in fp32."""
    import torch

    if config.get("torch_dtype") not in ("bfloat16", "float16"):
        return torch.float32
    return torch.float16 if weight_format == "fp16" else getattr(torch, config["torch_dtype"])


def _traceable(model, dtype) -> None:
    """OpenVINO's 16-bit patch (what optimum-intel applies): linear and embedding weights stay 16-bit constants
    with their decompression in the graph, the rest is cast to fp32, and tracing multiplies by no real weight."""
    import torch

    if dtype != torch.float32:
        from openvino.frontend.pytorch.patch_model import __make_16bit_traceable as make_16bit_traceable

        make_16bit_traceable(model)


def preflight(job, settings: dict) -> None:
    """Disk and memory before any work. On disk at once: the remapped language model, the part being exported
    uncompressed (the language model, then the tower: each is compressed before the next is written) and the
    output; in memory, the larger part as preflight.check_glm4v_export_memory counts it."""
    from . import preflight as checks

    fmt, vision = settings["weight_format"], vision_parameters(job.ckpt)
    language = job.parameters - vision
    dtype = load_dtype(job.ckpt.config, fmt)
    width = dtype.itemsize
    checks.check_disk({job.out: checks.output_bytes(job.parameters, fmt) + width * language
                       + (0 if fmt == "fp16" else width * max(language, vision))},
                      f"exporting GLM-4V to OpenVINO {fmt}")
    stored = job.ckpt.config.get("torch_dtype", "float32")
    checks.check_glm4v_export_memory(language, vision, width, converted=str(dtype) != f"torch.{stored}")


def check_settings(settings: dict) -> None:
    used = [k for k in DATA_FREE if settings.get(k)]
    if used:
        raise GlmkitError(f"--{used[0].replace('_', '-')} needs text calibration of a text model; GLM-4V converts "
                          "with data-free compression (drop it)")


def _quantize(xml: Path, q: dict) -> None:
    import openvino as ov
    from optimum.intel.openvino.quantization import _weight_only_quantization

    _replace(xml, _weight_only_quantization(ov.Core().read_model(xml), q))


def _quantize_activations(xml: Path, pixels: list[np.ndarray]) -> None:
    """int8 weights and activations (NNCF post-training quantization, its transformer scheme with SmoothQuant):
    the tower's matmuls then run on the CPU's integer units (VNNI, AMX)."""
    import nncf
    import openvino as ov

    alphas = nncf.AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA)
    model = nncf.quantize(ov.Core().read_model(xml), nncf.Dataset(pixels), subset_size=len(pixels),
                          model_type=nncf.ModelType.TRANSFORMER,
                          advanced_parameters=nncf.AdvancedQuantizationParameters(smooth_quant_alphas=alphas))
    _replace(xml, model)


def _replace(xml: Path, model) -> None:
    """Write model over the IR at xml (staged beside it, then moved into place)."""
    import openvino as ov

    staged = xml.parent / "nncf-staged"
    ov.save_model(model, staged / xml.name, compress_to_fp16=False)
    del model
    for f in (xml.name, xml.with_suffix(".bin").name):
        (staged / f).replace(xml.parent / f)
    staged.rmdir()


def _language(source_dir: Path, out: Path, fp16: bool, dtype, quiet: bool) -> dict:
    """The language model and its text embeddings, through optimum-intel's VLM helpers; returns its config."""
    import torch
    from optimum.exporters.openvino.convert import export_models
    from optimum.exporters.openvino.model_configs import (
        get_vlm_text_embeddings_config,
        get_vlm_text_generation_config,
    )
    from optimum.intel import OVConfig
    from transformers import AutoModelForCausalLM

    loaded = str(dtype).removeprefix("torch.")
    progress.say(f"exporting the language model with optimum-intel ({loaded}{'' if fp16 else ' → NNCF'})", quiet)
    model = AutoModelForCausalLM.from_pretrained(str(source_dir), dtype=dtype).eval()
    config = model.config.to_dict()
    embeddings = model.get_input_embeddings()
    embeddings.config = model.config  # optimum's exporter reads a config from every model it is given
    models = {"openvino_language_model": (model, get_vlm_text_generation_config("glm", model.config, "int64",
                                                                                  "fp32")),
              "openvino_text_embeddings_model": (embeddings, get_vlm_text_embeddings_config("glm", model.config,
                                                                                            "int64", "fp32"))}
    export_models(models, out, stateful=True, library_name="transformers",
                  ov_config=OVConfig(dtype="fp16") if fp16 else None, patch_16bit_model=dtype != torch.float32)
    return config


def _vision(ckpt, out: Path, fmt: str, dtype, quiet: bool) -> None:
    import openvino as ov
    import torch
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    progress.say(f"converting the vision tower with openvino.convert_model ({fmt})", quiet)
    tower = vision_tower.load(ckpt, dtype)
    _traceable(tower, dtype)
    size = ckpt.config["vision_config"]["image_size"]
    example = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        # tracing runs the tower's attention for real (6,401 tokens at 1120 px: minutes on a laptop); torch's
        # check_trace would run it all a second time to compare, for a module with no data-dependent branches
        decoder = TorchScriptPythonDecoder(tower, example_input=example, trace_kwargs={"check_trace": False})
        model = ov.convert_model(decoder, example_input=example)
    model.inputs[0].get_tensor().set_names({"pixel_values"})
    model.outputs[0].get_tensor().set_names({"image_features"})
    ov.save_model(model, out / ir.VISION_XML, compress_to_fp16=fmt == "fp16")


def export(job, settings: dict, nncf_config: dict | None) -> dict:
    """Write the GLM-4V IR at job.tmp; returns the manifest fields."""
    from optimum.exporters.openvino.convert import export_tokenizer

    from glmkit.sources.tokenizer import load_hf_tokenizer

    from .openvino_ir import ir_weight_precisions, rope_frequencies_in_f32, write_generation_config

    source_dir, out, fp16 = job.native_dir(), job.tmp, settings["weight_format"] == "fp16"
    dtype = load_dtype(job.ckpt.config, settings["weight_format"])
    int8 = {"bits": 8, "sym": False, "group_size": -1, "ratio": 1.0, "dtype": "int8"}
    # each part is compressed as soon as it is written, so at most one uncompressed part is ever on disk
    config = _language(source_dir, out, fp16, dtype, job.quiet)
    if nncf_config:
        progress.say(f"compressing the language model with NNCF ({settings['weight_format']}) and the text "
                     "embeddings (int8)", job.quiet)
        _quantize(out / ir.LANGUAGE_XML, nncf_config)
        _quantize(out / ir.TEXT_EMBEDDINGS_XML, int8)
    else:
        rope_frequencies_in_f32(out, source_dir, ir.LANGUAGE_XML)
    tower = vision_format(settings)
    _vision(job.ckpt, out, tower, dtype, job.quiet)
    calibration = None
    if tower == "int8":
        progress.say("compressing the vision tower with NNCF (int8 weights)", job.quiet)
        _quantize(out / ir.VISION_XML, int8)
    elif tower == "w8a8":
        pixels = calibration_pixels(settings.get("vision_calibration"), job.ckpt.config["vision_config"]["image_size"])
        calibration = {"pictures": len(pixels), "from": settings.get("vision_calibration") or "generated"}
        progress.say(f"quantizing the vision tower's weights and activations with NNCF (int8, {len(pixels)} "
                     "calibration pictures)", job.quiet)
        _quantize_activations(out / ir.VISION_XML, pixels)
    tok = load_hf_tokenizer(source_dir)
    tok.save_pretrained(out)
    export_tokenizer(tok, out)
    src = job.ckpt.config
    job.config = {**config, "vision_config": src["vision_config"], "boi_token_id": src["boi_token_id"],
                  "eoi_token_id": src["eoi_token_id"]}
    (out / "config.json").write_text(json.dumps(job.config, indent=2) + "\n")
    fmt = families.CHAT_FORMATS["glm4v"]
    write_generation_config(out, source_dir, fmt)
    return {"chat_format": fmt.name, "loaded_as": str(dtype).removeprefix("torch."),
            "settings": {**settings, "vision_weight_format": tower,
                         **({"vision_calibration": calibration} if calibration else {})},
            "weight_precisions": {Path(x).stem: ir_weight_precisions(out / x) for x in ir.FILES},
            "size_bytes": sum(f.stat().st_size for f in out.iterdir() if f.is_file())}


def verification_prompt(tokenizer_dir: Path, image_size: int, n: int = 512):
    """An image prompt: a drawn image (shapes, colours, a word) and the chat format around it, then held-out
    text as the answer, so the compared positions read the image and go on as text."""
    from PIL import Image, ImageDraw

    from glmkit.glm4 import template
    from glmkit.sources.embedded import held_out_text
    from glmkit.sources.tokenizer import load_hf_tokenizer

    image = Image.new("RGB", (320, 240), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((20, 30, 140, 150), fill="red")
    draw.rectangle((180, 60, 300, 200), fill="blue")
    draw.text((40, 190), "GLM", fill="black")
    msgs = [{"role": "user", "content": "Describe the image.", "image": True}]
    text = template.render(vision.GLM4V_CHAT_TEMPLATE, msgs) + "\n" + held_out_text()[:4000]
    ids = load_hf_tokenizer(tokenizer_dir)(text, add_special_tokens=False)["input_ids"][:n]
    return ids, vision.preprocess(image, image_size)


class SourceModel:
    """The source in fp32 — transformers' model of the language part and the torch vision tower — answering as the
    original computes (its positions, no KV cache): the reference for verification and for glm4v-tiny's accuracy."""

    def __init__(self, source_dir: Path, ckpt):
        import torch
        from transformers import AutoModelForCausalLM

        from glmkit.runtimes.tokenizer import from_hf

        self.torch, self.ckpt = torch, ckpt
        self.model = AutoModelForCausalLM.from_pretrained(str(source_dir), dtype=torch.float32).eval()
        self.tower = vision_tower.load(ckpt)
        self.tokenizer = from_hf(source_dir)
        v = ckpt.config["vision_config"]
        self.image_size, self.patch_size, self.boi = v["image_size"], v["patch_size"], ckpt.config["boi_token_id"]

    def logits(self, ids: list[int], pixels: np.ndarray) -> np.ndarray:
        torch = self.torch
        b = ids.index(self.boi)
        with torch.no_grad():
            features = self.tower(torch.from_numpy(pixels))
            embeds = self.model.get_input_embeddings()(torch.tensor([ids]))
            spliced = torch.cat([embeds[:, :b], features, embeds[:, b + vision.MARKER_TOKENS:]], dim=1)
            positions = torch.tensor([vision.positions(ids, self.boi, self.image_size, self.patch_size)])
            return self.model(inputs_embeds=spliced, position_ids=positions).logits[0].numpy()

    def answer(self, messages: list[dict], max_new_tokens: int = 4) -> str:
        """The greedy answer to chat messages holding one image, up to a stop token."""
        from glmkit.glm4 import prompt as prompts
        from glmkit.glm4.parser import OutputParser
        from glmkit.runtimes import images

        rendered = prompts.from_messages(self.tokenizer, messages, families.CHAT_FORMATS["glm4v"])
        pixels = vision.preprocess(images.read(rendered.image).rgb, self.image_size)
        out: list[int] = []
        for _ in range(max_new_tokens):
            tok = int(self.logits(rendered.ids + out, pixels)[-1].argmax())
            if tok in self.tokenizer.stop_ids:
                break
            out.append(tok)
        parser = OutputParser(rendered.output)
        parser.feed(self.tokenizer.decode(out))
        parser.close()
        return parser.content


def reference_logits(source_dir: Path, ckpt, ids: list[int], pixels: np.ndarray) -> np.ndarray:
    """The source's logits for an image prompt (SourceModel)."""
    return SourceModel(source_dir, ckpt).logits(ids, pixels)


def text_rows(ids: list[int], boi: int, image_tokens: int) -> np.ndarray:
    """Rows of the expanded sequence that predict text: all but the patches (the eoi vector's row predicts the
    first token after the image)."""
    b = ids.index(boi)
    n = len(ids) - vision.MARKER_TOKENS + image_tokens
    return np.array([r for r in range(n) if not b < r < b + image_tokens - 1])


def verify(job, precision: str, gated: bool):
    """(Verification, manifest record) for the IR at job.tmp against the source."""
    from glmkit.runtimes.logits import image_prompt_logits

    from . import verify as verify_mod

    skipped = verify_mod.reference_fits(job.parameters, sum(f.stat().st_size for f in job.tmp.iterdir()))
    if skipped:  # GLM-4V's reference (text and tower) has no block-wise path yet
        skipped = f"verification skipped: {skipped}; verify on a machine with more memory"
        progress.say(skipped, job.quiet)
        return None, {"skipped": skipped}
    progress.say("verifying an image prompt against the source (transformers + the torch vision tower, fp32)",
                 job.quiet)
    v = job.ckpt.config["vision_config"]
    ids, pixels = verification_prompt(job.native_dir(), v["image_size"])
    rows = text_rows(ids, job.ckpt.config["boi_token_id"], vision.image_tokens(v["image_size"], v["patch_size"]))
    ref = reference_logits(job.native_dir(), job.ckpt, ids, pixels)[rows]
    result = verify_mod.compare(ref, image_prompt_logits(job.tmp, ids, pixels)[rows], precision, gated=gated)
    progress.say(result.summary(), job.quiet)
    return result, {**result.to_dict(), "image_prompt": True}
