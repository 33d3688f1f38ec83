"""GLM-4V-9B's format as the original computes it: its checkpoint recognised, its prompt, its image positions,
its pixel preprocessing and its vision tower — each against independent code (the original's own position
arithmetic, the reference glm-4-9b-chat template, transformers' CLIP image processor; vLLM's vision tower in
tests/test_vllm.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from glmkit.convert import GlmkitError, synthetic, vision_tower
from glmkit.convert.checkpoint import open_checkpoint
from glmkit.glm4 import families, template, vision

TEMPLATES = Path(__file__).parent / "data" / "templates"


@pytest.fixture(scope="module")
def tiny(glmkit_cache):
    return open_checkpoint(synthetic.path("synthetic:glm4v:tiny", quiet=True))


def test_a_glm4v_checkpoint_is_told_from_the_text_chatglm_one(tiny):
    assert tiny.family.name == "glm4v" and tiny.family.vision
    text = {k: v for k, v in tiny.config.items() if k != "vision_config"}
    assert families.detect(text).name == "chatglm"
    assert families.chat_format(tiny.config).name == "glm4v"
    assert tiny.config["boi_token_id"] != tiny.config["eoi_token_id"]
    assert "chat_template" not in (tiny.path / "tokenizer_config.json").read_text()  # as glm-4v-9b ships


def test_the_synthetic_checkpoint_has_the_published_layout(tiny):
    """Every `transformer.vision.*` tensor loads into the tower by its published name (none missing, none left),
    and the real shape's tower has the published size (about 4.5 B parameters)."""
    from math import prod

    tower = vision_tower.load(tiny)
    assert set(tower.state_dict()) == {n[len(vision_tower.PREFIX):] for n, _ in tiny.tensors()
                                       if n.startswith(vision_tower.PREFIX)}
    real = sum(prod(s) for s in synthetic.vision_tensors("glm-4v-9b").values())
    assert 4.45e9 < real < 4.55e9, real  # 13.9 B in all with the 9.4 B language model
    assert synthetic.vision_tensors("glm-4v-9b")["transformer.vision.conv.weight"] == (4096, 1792, 2, 2)


def test_image_features_have_the_published_count(tiny):
    v = tiny.config["vision_config"]
    out = vision_tower.load(tiny)(torch.zeros(1, 3, v["image_size"], v["image_size"]))
    assert out.shape == (1, vision.image_tokens(v["image_size"], v["patch_size"]), tiny.config["hidden_size"])
    assert vision.image_tokens(1120, 14) == 1602


def _original_positions(ids: list[int], boi: int, eoi: int, patches: int) -> list[int]:
    """The original modeling code's arithmetic: sequential position ids, sliced around the image — up to boi,
    boi + 1 repeated once per patch, then from eoi on."""
    position_ids = torch.arange(len(ids))[None]
    b, e = ids.index(boi), ids.index(eoi)
    assert e - b == 2
    return torch.cat((position_ids[0, :b + 1], position_ids[0, b + 1].repeat(patches), position_ids[0, e:])).tolist()


@pytest.mark.parametrize("before,after", [(2, 5), (7, 0), (3, 40)])
def test_positions_are_the_originals(before, after):
    boi, pad, eoi = 900, 901, 902
    ids = list(range(before)) + [boi, pad, eoi] + list(range(10, 10 + after))
    got = vision.positions(ids, boi, 1120, 14)
    assert got == _original_positions(ids, boi, eoi, 1600)
    assert len(got) == len(ids) - 3 + 1602  # one per embedding of the expanded sequence
    assert got[-1] == len(ids) - 1  # so the next token takes len(ids): decoding goes on from the unexpanded length


def test_one_image_per_conversation():
    with pytest.raises(GlmkitError, match="one image"):
        vision.positions([1, 900, 0, 902, 900, 0, 902], 900, 1120, 14)


def test_the_prompt_is_the_originals():
    msgs = [{"role": "user", "content": "What is in the picture?", "image": True}]
    assert template.render(vision.GLM4V_CHAT_TEMPLATE, msgs) == (
        "[gMASK]<sop><|user|>\n<|begin_of_image|><|endoftext|><|end_of_image|>What is in the picture?<|assistant|>")


def test_text_turns_and_tools_render_as_glm_4_9b_chat():
    """Without an image, GLM-4V's turns are glm-4-9b-chat's: the template that checkpoint ships renders the same."""
    reference = (TEMPLATES / "glm-4-9b-chat.chat_template.jinja").read_text(encoding="utf-8")
    tool = {"type": "function", "function": {"name": "get_weather", "description": "天气",
                                             "parameters": {"type": "object", "properties": {}}}}
    msgs = [{"role": "system", "content": "", "tools": [tool]}, {"role": "user", "content": "hi"},
            {"role": "assistant", "metadata": "get_weather", "content": "{}"},
            {"role": "observation", "content": "sunny"}, {"role": "assistant", "content": "It is sunny."},
            {"role": "user", "content": "thanks"}]
    assert template.render(vision.GLM4V_CHAT_TEMPLATE, msgs) == template.render(reference, msgs)


def test_preprocessing_equals_transformers_clip_processor():
    from PIL import Image
    from transformers import CLIPImageProcessor

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (37, 53, 4), dtype=np.uint8), "RGBA")  # any mode, any aspect
    ref = CLIPImageProcessor(size={"height": 112, "width": 112}, do_center_crop=False, resample=Image.BICUBIC,
                             image_mean=vision.MEAN, image_std=vision.STD, do_convert_rgb=True)
    want = ref(images=image, return_tensors="np")["pixel_values"]
    got = vision.preprocess(image, 112)
    assert got.shape == want.shape == (1, 3, 112, 112) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_glm4v_is_refused_where_no_engine_carries_its_vision_tower(glmkit_cache, tmp_path):
    out = tmp_path / "v.gguf"
    r = subprocess.run([sys.executable, "-m", "glmkit.convert", "synthetic:glm4v:tiny", "--to", "gguf", "-o",
                        str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "llama.cpp has no path for its vision tower" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not out.exists() and list(tmp_path.iterdir()) == []
