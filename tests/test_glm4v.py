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

from glmkit.convert import GlmkitError, vision_tower
from glmkit.glm4 import families, template, vision
from glmkit.sources import synthetic
from glmkit.sources.checkpoint import open_checkpoint

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


ORIGINAL_PROMPT = ("[gMASK]<sop><|user|>\n<|begin_of_image|><|endoftext|><|end_of_image|>What is in the picture?"
                   "<|assistant|>")
# the same turn as OpenAI content parts, as vLLM hands them to a template (text parts joined)
CONTENT_PARTS = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is "},
                                              {"type": "text", "text": "in the picture?"}]}]


def test_the_prompt_is_the_originals():
    msgs = [{"role": "user", "content": "What is in the picture?", "image": True}]
    assert template.render(vision.GLM4V_CHAT_TEMPLATE, msgs) == ORIGINAL_PROMPT
    assert template.render(vision.GLM4V_CHAT_TEMPLATE, CONTENT_PARTS) == ORIGINAL_PROMPT


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
    # tools as the template's argument (how vLLM passes them) land where glm-serve puts them: the first message
    plain = [{k: v for k, v in m.items() if k != "tools"} for m in msgs]
    assert template.render(vision.GLM4V_CHAT_TEMPLATE, plain, tools=[tool]) == template.render(reference, msgs)


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


@pytest.fixture(scope="module")
def irs(tmp_path_factory, glmkit_cache):
    from glmkit.convert.openvino import to_openvino

    root = tmp_path_factory.mktemp("glm4v-ir")
    return {w: to_openvino("synthetic:glm4v:tiny", root / w, weight_format=w, quiet=True)
            for w in ("fp16", "int8", "int4")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, glmkit_cache):
    """glm4v-tiny, the embedded GLM-4V trained on pictures, converted to int8 (language, tower and embeddings)."""
    from glmkit.convert.openvino import to_openvino

    return to_openvino("glm4v-tiny", tmp_path_factory.mktemp("glm4v-tiny") / "int8", weight_format="int8",
                       quiet=True)


def _task():
    import random

    from glmkit.sources import pictures

    return pictures.task(random.Random(7), "colour")


def _manifest(path):
    import json

    return json.loads((path / "glmkit.json").read_text())


@pytest.mark.parametrize("weights,least", [("fp16", 0.98), ("int8", 0.93), ("int4", 0.6)])
def test_each_precision_verifies_an_image_prompt_against_the_source(irs, weights, least):
    """The IR's logits for an image prompt (features spliced in, the original's positions) against
    transformers' model of the language part with glmkit's torch tower; random weights, so int4 only reported."""
    m = _manifest(irs[weights])
    assert m["family"] == "glm4v" and m["chat_format"] == "glm4v"
    assert m["verification"]["image_prompt"] and m["verification"]["top1_agreement"] >= least, m["verification"]
    assert m["verification"]["tokens"] > 400
    assert m["verification"]["tokenizer"]["passed"] and m["verification"]["ir_tokenizer"]["identical"] > 0
    vision_bits = m["weight_precisions"]["openvino_vision_embeddings_model"]
    assert set(vision_bits) == ({"f16"} if weights == "fp16" else {"u8"} | ({"f32"} & set(vision_bits)))


@pytest.fixture(scope="module")
def tiny_bf16(tmp_path_factory, tiny):
    """synthetic:glm4v:tiny stored as glm-4v-9b is, in bfloat16: the export then loads it as 16-bit."""
    import json
    import shutil

    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("glm4v-bf16")
    for f in tiny.path.iterdir():
        if f.suffix != ".safetensors" and f.name != "model.safetensors.index.json" and f.is_file():
            shutil.copy(f, out / f.name)
    save_file({n: t.to(torch.bfloat16).contiguous() for n, t in tiny.tensors()}, out / "model.safetensors")
    config = json.loads((tiny.path / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "torch_dtype": "bfloat16"}))
    return out


@pytest.mark.parametrize("weights,least", [("fp16", 0.98), ("int8", 0.93)])
def test_a_16bit_checkpoint_exports_16bit_and_still_verifies(tiny_bf16, tmp_path, weights, least):
    """A bfloat16 source (glm-4v-9b's dtype) loads as 16-bit with OpenVINO's tracing patch — the path that lets
    the 9B shape export in 24 GB — and its IRs still verify against the fp32 source, the tower included (the patch
    swaps .weight for a placeholder: a tower reading .weight directly would trace zeros)."""
    from glmkit.convert.openvino import to_openvino

    m = _manifest(to_openvino(str(tiny_bf16), tmp_path / weights, weight_format=weights, quiet=True))
    assert m["loaded_as"] == ("float16" if weights == "fp16" else "bfloat16")
    assert m["verification"]["image_prompt"] and m["verification"]["top1_agreement"] >= least, m["verification"]


def test_the_ir_reads_images_at_the_originals_positions(irs, tiny):
    """Through the fp16 IR: with the original's positions the logits follow the source; with vLLM's sequential
    positions they do not (the failure this guards against)."""
    from glmkit.convert.openvino_glm4v import reference_logits, text_rows, verification_prompt
    from glmkit.runtimes import glm4v
    from glmkit.runtimes.logits import image_prompt_logits
    from glmkit.sources.source import transformers_dir

    path = irs["fp16"]
    v = tiny.config["vision_config"]
    ids, pixels = verification_prompt(path, v["image_size"], n=64)
    ref = reference_logits(transformers_dir("synthetic:glm4v:tiny"), tiny, ids, pixels)
    got = image_prompt_logits(path, ids, pixels)
    assert np.abs(got - ref).max() < 0.05

    ir = glm4v.Glm4vIR(path, properties={"INFERENCE_PRECISION_HINT": "f32"})
    embeds, _ = ir.splice(ids, ir.image_features(pixels))
    ir.reset()
    sequential = ir.forward(embeds, list(range(embeds.shape[1])))
    rows = text_rows(ids, tiny.config["boi_token_id"], vision.image_tokens(v["image_size"], v["patch_size"]))
    assert np.abs(sequential[rows] - ref[rows]).max() > 20 * np.abs(got[rows] - ref[rows]).max()


def _drawn(colour="red", size=(160, 120)):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse((20, 10, 90, 80), fill=colour)
    return image


def _data_url(image, fmt="PNG") -> str:
    import base64
    import io

    buf = io.BytesIO()
    image.save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def _ask(image, text="What is in the picture?"):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _data_url(image)}},
                                         {"type": "text", "text": text}]}]


EXACT = {"dtype": "float32", "kv_cache": "f32"}


def _reference_greedy(tiny, ids, pixels, n):
    """Greedy decoding through the source, every step a full forward with the original's positions: the vision
    tower, then transformers' model of the language part (no KV, no glmkit runtime)."""
    from glmkit.convert.openvino_glm4v import reference_logits
    from glmkit.sources.source import transformers_dir

    out = []
    for _ in range(n):
        out.append(int(reference_logits(transformers_dir("synthetic:glm4v:tiny"), tiny, ids + out, pixels)[-1]
                       .argmax()))
    return out


def test_the_runtime_answers_as_the_source(irs, tiny):
    from glmkit.runtimes import GenerationConfig, load

    image = _drawn()
    with load(str(irs["fp16"]), **EXACT) as rt:
        prompt = rt.prompt(_ask(image))
        r = rt.generate(_ask(image), GenerationConfig(max_new_tokens=6, ignore_eos=True))
    assert prompt.image is not None and prompt.ids.count(tiny.config["boi_token_id"]) == 1
    pixels = vision.preprocess(image.convert("RGB"), tiny.config["vision_config"]["image_size"])
    assert r.token_ids == _reference_greedy(tiny, prompt.ids, pixels, 6)


def test_the_next_turn_reuses_the_kv_and_the_images_features(irs):
    from glmkit.runtimes import GenerationConfig, load

    g = GenerationConfig(max_new_tokens=8)
    first = _ask(_drawn())
    with load(str(irs["fp16"]), **EXACT) as rt, load(str(irs["fp16"]), prefix_cache=False, **EXACT) as cold:
        a = rt.generate(first, g)
        turn2 = first + [{"role": "assistant", "content": a.text}, {"role": "user", "content": "And the colour?"}]
        b = rt.generate(turn2, g)
        assert rt.images_encoded == 1  # the image's features were reused, not encoded again (a count, not a time)
        assert b.cached_tokens > len(rt.prompt(first).ids) - 2  # the image and the first question stayed
        assert b.token_ids == cold.generate(turn2, g).token_ids
        rt.generate(_ask(_drawn("blue")), g)  # another image: encoded, and nothing of the old KV is used
        assert rt.images_encoded == 2


def test_the_glm4v_engine_holds_and_reuses_by_the_kv_rule(irs):
    """runtimes/kv.py's rule on GLM-4V: the cache holds the prompt and the decoded answer, tagged with its image;
    the same image's next turn reuses exactly the shared prefix, another image nothing."""
    from glmkit.runtimes import GenerationConfig, load
    from glmkit.runtimes.kv import shared_prefix

    g = GenerationConfig(max_new_tokens=6, ignore_eos=True)
    first = _ask(_drawn())
    with load(str(irs["fp16"]), **EXACT) as rt:
        a = rt.generate(first, g)
        prompt, held = rt.prompt(first).ids, list(rt.kv.ids)
        assert held[:len(prompt)] == prompt and held[len(prompt):] == a.token_ids[:len(held) - len(prompt)]
        turn2 = first + [{"role": "assistant", "content": a.text}, {"role": "user", "content": "And the colour?"}]
        extra = a.prompt_tokens - len(prompt)  # usage counts the image's embeddings, beyond its 3 marker tokens
        assert extra > 0 and rt.generate(turn2, g).cached_tokens == shared_prefix(held, rt.prompt(turn2).ids) + extra
        assert rt.generate(_ask(_drawn("blue")), g).cached_tokens == 0


def test_an_image_prompt_goes_in_bounded_passes_with_the_same_logits(irs, tiny, monkeypatch):
    """The language model takes a long prompt PREFILL_CHUNK embeddings at a time (its buffers grow with the
    longest pass, gigabytes at the 9B shape); chunked, an image prompt's logits are the one-pass logits (with an
    f32 KV cache, as exact logits are measured: later passes read what earlier ones stored)."""
    from glmkit.convert.openvino_glm4v import verification_prompt
    from glmkit.runtimes import glm4v
    from glmkit.runtimes.kinds.openvino import EXACT

    v = tiny.config["vision_config"]
    ids, pixels = verification_prompt(irs["fp16"], v["image_size"], n=200)

    class Recorded:  # the language model's infer request, counting the embeddings of each pass
        def __init__(self, request):
            self.request, self.passes = request, []

        def infer(self, inputs):
            self.passes.append(inputs["inputs_embeds"].shape[1])
            return self.request.infer(inputs)

        def get_tensor(self, name):
            return self.request.get_tensor(name)

    def logits(chunk: int):
        monkeypatch.setattr(glm4v, "PREFILL_CHUNK", chunk)
        ir = glm4v.Glm4vIR(irs["fp16"], properties={**EXACT, "KV_CACHE_PRECISION": "f32"})
        ir.request = recorded = Recorded(ir.request)
        embeds, positions = ir.splice(ids, ir.image_features(pixels))
        rows = ir.forward(embeds, positions)
        return rows, ir.forward(ir.embed([ids[-1]]), [positions[-1] + 1], last=True), recorded.passes

    n = len(ids) - vision.MARKER_TOKENS + vision.image_tokens(v["image_size"], v["patch_size"])
    whole, next_whole, passes = logits(10**6)
    assert passes == [n, 1] and whole.shape[0] == n
    chunked, next_chunked, passes = logits(64)
    assert passes == [64, 64, 64, n - 192, 1] and chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, atol=1e-4)
    np.testing.assert_allclose(next_chunked, next_whole, atol=1e-4)


def test_a_failed_pass_leaves_no_stale_kv(irs, monkeypatch):
    """A prefill that fails (an engine error before the state moved) or is interrupted (Ctrl-C after it moved)
    must not leave the runtime believing it holds the conversation's KV: the same request again answers as a
    fresh runtime does."""
    from glmkit.runtimes import GenerationConfig, load

    g = GenerationConfig(max_new_tokens=8, ignore_eos=True)
    with load(str(irs["fp16"]), **EXACT) as rt, load(str(irs["fp16"]), **EXACT) as fresh:
        expected = fresh.generate(_ask(_drawn()), g).token_ids
        real = rt.ir.request.infer

        def fails(*a, **kw):
            raise RuntimeError("engine error")

        def interrupted(*a, **kw):
            real(*a, **kw)
            raise KeyboardInterrupt

        monkeypatch.setattr(rt.ir.request, "infer", fails)
        with pytest.raises(RuntimeError):
            rt.generate(_ask(_drawn()), g)
        monkeypatch.setattr(rt.ir.request, "infer", real)
        assert rt.generate(_ask(_drawn()), g).token_ids == expected
        monkeypatch.setattr(rt.ir.request, "infer", interrupted)
        assert rt.generate(_ask(_drawn()), g).finish_reason == "interrupted"  # Ctrl-C in glm-chat
        monkeypatch.setattr(rt.ir.request, "infer", real)
        assert rt.generate(_ask(_drawn()), g).token_ids == expected


def test_streaming_stop_strings_and_seeded_sampling(irs):
    from glmkit.runtimes import GenerationConfig, TextDelta, load

    with load(str(irs["fp16"])) as rt:
        full = rt.generate(_ask(_drawn()), GenerationConfig(max_new_tokens=16, ignore_eos=True))
        stop = full.text[5:8]
        events = list(rt.stream(_ask(_drawn()), GenerationConfig(max_new_tokens=16, stop=(stop,))))
        assert all(isinstance(e, TextDelta) for e in events[:-1])
        assert events[-1].finish_reason == "stop_string" and stop not in events[-1].text
        assert "".join(e.text for e in events[:-1]) == events[-1].text == full.text[:full.text.index(stop)]
        sampled = [rt.generate(_ask(_drawn()), GenerationConfig(max_new_tokens=8, temperature=1.0, seed=s))
                   .token_ids for s in (1, 1, 2)]
        assert sampled[0] == sampled[1] != sampled[2]


def test_bad_images_get_one_clear_error(irs, tiny_artifacts, tmp_path):
    import base64

    from PIL import Image

    from glmkit.runtimes import GenerationConfig, load

    g = GenerationConfig(max_new_tokens=2)
    huge = tmp_path / "huge.png"
    Image.new("1", (8000, 8000)).save(huge)
    bad = {"corrupt": [{"role": "user", "content": [{"type": "image_url", "image_url": {
               "url": "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"cut" * 9).decode()}},
                                                 {"type": "text", "text": "?"}]}],
           "remote": [{"role": "user", "content": [{"type": "image_url", "image_url": {
               "url": "http://169.254.169.254/latest"}}]}],
           "missing": [{"role": "user", "content": [{"type": "image", "image": str(tmp_path / "nope.png")}]}],
           "huge": [{"role": "user", "content": [{"type": "image", "image": str(huge)}]}],
           "two": _ask(_drawn()) + [{"role": "assistant", "content": "ok"}] + _ask(_drawn("blue"))}
    want = {"corrupt": "not a readable image", "remote": "does not fetch images", "missing": "no such image",
            "huge": "64,000,000 pixels", "two": "one image per conversation"}
    with load(str(irs["fp16"])) as rt:
        for name, msgs in bad.items():
            with pytest.raises(GlmkitError, match=want[name]):
                rt.generate(msgs, g)
    with load(tiny_artifacts["openvino"]) as text_only:
        with pytest.raises(GlmkitError, match="reads text only"):
            text_only.generate(_ask(_drawn()), g)
    with pytest.raises(GlmkitError, match="not available for a GLM-4V"):
        load(str(irs["fp16"]), parallel=2)


def test_the_sampler_keeps_what_transformers_keeps():
    """glmkit's numpy sampler against transformers' own logits processors: the same tokens survive repetition
    penalty, temperature, top-k and top-p, and greedy picks their argmax."""
    from transformers import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from glmkit.runtimes import GenerationConfig
    from glmkit.runtimes.sampling import Sampler

    rng = np.random.default_rng(0)
    for trial in range(20):
        logits = rng.standard_normal(300).astype(np.float32) * 3
        seen = rng.integers(0, 300, 30).tolist()
        c = GenerationConfig(temperature=0.7, top_k=int(rng.integers(5, 80)), top_p=float(rng.uniform(0.3, 0.95)),
                             repetition_penalty=1.3, seed=trial)
        x = torch.from_numpy(logits)[None]
        ids = torch.tensor([seen])
        for proc in (RepetitionPenaltyLogitsProcessor(1.3), TemperatureLogitsWarper(0.7), TopKLogitsWarper(c.top_k),
                     TopPLogitsWarper(c.top_p)):
            x = proc(ids, x)
        support = set(torch.nonzero(torch.isfinite(x[0])).flatten().tolist())
        draws = {Sampler(GenerationConfig(**{**c.__dict__, "seed": s}), seen)(logits) for s in range(200)}
        assert draws <= support and len(draws) > min(3, len(support) // 2)
        greedy = Sampler(GenerationConfig(repetition_penalty=1.3), seen)(logits)
        assert greedy == int(RepetitionPenaltyLogitsProcessor(1.3)(ids, torch.from_numpy(logits)[None]).argmax())


def _glm_chat(*args, **kw):
    return subprocess.run([sys.executable, "-m", "glmkit.runtimes", *map(str, args)], capture_output=True,
                          text=True, timeout=300, **kw)


def test_glm_chat_image_gives_the_runtimes_answer(trained, tiny_artifacts, tmp_path):
    """glm4v-tiny through glm-chat --image: the answer the runtime gives in-process."""
    from glmkit.runtimes import GenerationConfig, load
    from glmkit.sources.pictures import QUESTIONS

    task = _task()
    path = tmp_path / "picture.png"
    task["image"].save(path)
    question = QUESTIONS[task["kind"]]
    with load(str(trained)) as rt:
        want = rt.generate([{"role": "user", "content": [{"type": "image", "image": str(path)},
                                                         {"type": "text", "text": question}]}],
                           GenerationConfig(max_new_tokens=10)).text
    r = _glm_chat(trained, "--image", path, "--prompt", question, "--max-new-tokens", "10")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == want.strip() and want.strip()
    text = _glm_chat(tiny_artifacts["openvino"], "--image", path, "--prompt", "?")
    assert text.returncode == 2 and "reads text only" in text.stderr and "Traceback" not in text.stderr
    bad = _glm_chat(trained, "--image", tmp_path / "none.png", "--prompt", "?")
    assert bad.returncode == 2 and "no such image" in bad.stderr


def test_glm_chat_attaches_an_image_mid_chat(trained, tmp_path):
    """/image PATH in a running glm-chat (a pseudo-terminal, as a person types it): the next message carries it,
    and the conversation goes on about it without encoding it again."""
    import os

    from pexpect import fdpexpect

    path = tmp_path / "circle.png"
    _drawn().save(path)
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "glmkit.runtimes", str(trained), "--max-new-tokens", "6"],
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    child = fdpexpect.fdspawn(master, encoding="utf-8", timeout=180)
    try:
        child.expect("you> ")
        child.sendline(f"/image {tmp_path / 'missing.png'}")
        child.expect(r"\[.*no such image.*\]")
        child.sendline(f"/image {path}")
        child.expect(r"\[image attached to your next message\]")
        for text in ("What shape is in the picture?", "What colour is the shape?"):
            child.sendline(text)
            child.expect("glm> ")
            child.expect("you> ")
        child.sendline("/stats")
        child.expect(r"history 2 turns · images encoded 1")
        child.sendline("/exit")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_glm_serve_answers_images_as_the_runtime(trained, tiny_artifacts):
    """glm-serve on glm4v-tiny (int8 IR) with the real openai client: an image_url data: URL part, streamed and
    not, answers as the runtime does in-process; remote URLs, bad and oversized images are 400s with the reason; a
    text model refuses image parts."""
    import openai
    from servers import serving

    from glmkit.runtimes import GenerationConfig, load
    from glmkit.sources.pictures import QUESTIONS

    task = _task()
    msgs = _ask(task["image"], QUESTIONS[task["kind"]])
    with load(str(trained)) as rt:
        want = rt.generate(msgs, GenerationConfig(max_new_tokens=10)).text
    with serving(str(trained), "--max-image-pixels", "1000000") as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        got = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=10, temperature=0)
        assert got.choices[0].message.content == want and want.strip()
        parts = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=10, temperature=0,
                                               stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in parts if c.choices) == want
        bad = {"http://169.254.169.254/latest/meta-data": "does not fetch images",
               "data:image/png;base64,AAAA": "not a readable image",
               _data_url(_drawn(size=(1200, 1000))): "1,200,000 pixels",
               "/etc/passwd": "a data: URL"}
        for url, why in bad.items():
            with pytest.raises(openai.BadRequestError, match=why):
                client.chat.completions.create(model="tiny", max_tokens=2, messages=[{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]}])
    with serving(tiny_artifacts["openvino"]) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="reads text only"):
            client.chat.completions.create(model="tiny", messages=msgs, max_tokens=2)


def test_two_interleaved_conversations_encode_each_image_once_and_keep_their_kv(trained):
    """Two users, two pictures, turns interleaved (A1 B1 A2 B2 A3 B3), each client sending its picture again
    with every turn as OpenAI clients do: each picture is encoded once, every returning turn reuses at least half
    of its previous prompt (its conversation's KV restored from host RAM), and usage counts an image as the
    embeddings it costs."""
    import httpx
    import openai
    from servers import serving

    from glmkit.runtimes import load

    with load(str(trained)) as rt:
        text_ids = len(rt.prompt(_ask(_drawn("red"))).ids)
        embeddings = (rt.ir.image_size // 28) ** 2 + 2  # the tower's output for one image
    with serving(str(trained)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        talks = {"A": _ask(_drawn("red")), "B": _ask(_drawn("blue", size=(120, 160)))}
        last: dict[str, int] = {}
        for turn in range(3):
            for who, msgs in talks.items():
                r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0)
                usage = r.usage
                if turn == 0:
                    assert usage.prompt_tokens == text_ids + embeddings - 3  # 3 marker tokens became the image
                else:
                    assert usage.prompt_tokens_details.cached_tokens >= last[who] / 2, (turn, who, usage)
                last[who] = usage.prompt_tokens
                msgs += [{"role": "assistant", "content": r.choices[0].message.content},
                         {"role": "user", "content": f"And then, {turn}?"}]
        health = httpx.get(f"{base}/health").json()
    assert health["images_encoded"] == 2 and health["image_cache_hits"] == 4
    assert health["prompt_cache"]["restored"] >= 4


def test_glm_bench_vision_measures_the_image_path(irs, tiny_artifacts, tmp_path):
    import json

    out = tmp_path / "vision.json"
    r = subprocess.run([sys.executable, "-m", "glmkit.benchmarks", "vision", str(irs["int8"]), "--reps", "2",
                        "--gen", "4", "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert len(data["runs"]) == 2 and all(run["image_encode_ms"] > 0 for run in data["runs"])  # never cached
    assert data["ttft_ms"] > data["image_encode_ms"] > 0 and data["decode_tps"] > 0 and data["peak_rss_mb"] > 0
    assert data["quality"]["top1_agreement"] == _manifest(irs["int8"])["verification"]["top1_agreement"]
    assert "image encode ms" in out.with_suffix(".md").read_text()
    text = subprocess.run([sys.executable, "-m", "glmkit.benchmarks", "vision", tiny_artifacts["openvino"]],
                          capture_output=True, text=True, timeout=300)
    assert text.returncode == 2 and "takes a GLM-4V" in text.stderr and "Traceback" not in text.stderr


def test_to_hf_writes_glm4v_as_vllm_runs_it_through_glmkits_model(tiny, tmp_path):
    """--to hf on GLM-4V: the source's tensors as they are (the layout vLLM reads; transformers has no GLM-4V-9B
    class), a config.json without remote code naming glmkit's vLLM model, and a tokenizer loaded without remote
    code whose template, rendered by transformers on OpenAI content parts as vLLM hands them over, is the
    original's prompt; glm-vllm prints the command for it. YaRN is refused (the positions are the original's)."""
    import json

    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from glmkit.convert.hf import to_hf
    from glmkit.serve.vllm import vllm_command

    out = to_hf("synthetic:glm4v:tiny", tmp_path / "hf", quiet=True)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [vision.VLLM_ARCHITECTURE] and "auto_map" not in config
    assert config["vision_config"] == tiny.config["vision_config"]
    written = {k: v for f in out.glob("*.safetensors") for k, v in load_file(str(f)).items()}
    source = dict(tiny.tensors())
    assert written.keys() == source.keys() and all(torch.equal(written[k], source[k]) for k in source)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.apply_chat_template(CONTENT_PARTS, tokenize=False, add_generation_prompt=True) == ORIGINAL_PROMPT
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}
    assert tok.apply_chat_template(CONTENT_PARTS, tools=[tool], tokenize=False, add_generation_prompt=True) == \
        template.render(vision.GLM4V_CHAT_TEMPLATE, [{**CONTENT_PARTS[0], "tools": [tool]}])
    marker = tok(vision.IMAGE_MARKER, add_special_tokens=False).input_ids
    assert marker == [tiny.config["boi_token_id"], tiny.config["pad_token_id"], tiny.config["eoi_token_id"]]
    argv = vllm_command(out)
    assert argv[:3] == ["vllm", "serve", str(out)]
    with pytest.raises(GlmkitError, match="rope-scaling"):
        to_hf("synthetic:glm4v:tiny", tmp_path / "yarn", rope_scaling="yarn:2", quiet=True)
    assert not (tmp_path / "yarn").exists()


def test_glm_vllm_refuses_glm4v_with_the_measured_difference(tiny):
    """vLLM's sequential image positions against the original's, through transformers on synthetic:glm4v:tiny:
    the figures glm-vllm quotes are the ones measured here."""
    import re

    from transformers import AutoModelForCausalLM

    from glmkit.convert.openvino_glm4v import text_rows, verification_prompt
    from glmkit.serve.vllm import vllm_command
    from glmkit.sources.source import transformers_dir

    with pytest.raises(GlmkitError, match="one shared position.*--to hf") as refused:
        vllm_command(tiny.path)  # as published: vLLM would run its own model
    source = transformers_dir("synthetic:glm4v:tiny")
    ids, pixels = verification_prompt(source, 112)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    boi = tiny.config["boi_token_id"]
    b = ids.index(boi)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(torch.tensor([ids]))
        x = torch.cat([embeds[:, :b], vision_tower.load(tiny)(torch.from_numpy(pixels)), embeds[:, b + 3:]], 1)
        original = model(inputs_embeds=x, position_ids=torch.tensor([vision.positions(ids, boi, 112, 14)]))
        sequential = model(inputs_embeds=x)  # position ids 0, 1, 2, … as vLLM gives them
    rows = text_rows(ids, boi, 18)
    a, s = original.logits[0].numpy()[rows], sequential.logits[0].numpy()[rows]
    after = rows > b
    quoted = re.search(r"up to ([\d.]+), a different top token at (\d+) %", str(refused.value))
    assert float(quoted.group(1)) == round(float(np.abs(a - s).max()), 1)
    assert int(quoted.group(2)) == round(100 * float((a[after].argmax(-1) != s[after].argmax(-1)).mean()))


MIN_TRAINED_ACCURACY = 0.7  # 73.8 % after 10,000 steps (colour 100 %, place 85 %, shape 70 %, word 40 %)


def test_glm4v_tiny_answers_what_it_sees_and_int8_keeps_it(trained):
    """Held-out pictures (their own seed): the source's greedy answers (transformers + the torch tower) reach the
    trained accuracy the manifest records, and the int8 IR through glmkit's runtime stays within 2 points."""
    from glmkit.convert.openvino_glm4v import SourceModel
    from glmkit.runtimes import GenerationConfig, load
    from glmkit.sources import embedded, pictures
    from glmkit.sources.source import transformers_dir

    tasks = pictures.held_out(80)
    ckpt = open_checkpoint(embedded.path("glm4v-tiny"))
    assert ckpt.family.name == "glm4v" and "transformer.vision.conv.weight" in dict(ckpt.tensors())
    source = pictures.accuracy(SourceModel(transformers_dir("glm4v-tiny"), ckpt).answer, tasks)
    assert source["accuracy"] >= MIN_TRAINED_ACCURACY, source
    recorded = _manifest(embedded.path("glm4v-tiny"))["held_out"]
    assert abs(recorded["accuracy"] - source["accuracy"]) <= 1 / len(tasks)  # one near-tie may fall otherwise
    with load(str(trained), dtype="float32") as rt:  # the weights' accuracy, not the CPU's bf16 arithmetic
        ir = pictures.accuracy(lambda m: rt.generate(m, GenerationConfig(max_new_tokens=4)).text, tasks)
    assert abs(ir["accuracy"] - source["accuracy"]) <= 0.02, (ir, source)


def test_a_w8a8_tower_keeps_glm4v_tinys_accuracy_and_verifies(tmp_path, glmkit_cache):
    """--vision-format w8a8: NNCF's post-training quantization gives the tower int8 weights and int8 activations
    (FakeQuantize before its matmuls), calibrated on generated pictures; the image-prompt verification is recorded
    and glm4v-tiny's held-out accuracy through glmkit's runtime stays within 2 points of the source's."""
    import openvino as ov

    from glmkit.convert.openvino import to_openvino
    from glmkit.runtimes import GenerationConfig, load
    from glmkit.runtimes.glm4v import VISION_XML
    from glmkit.sources import embedded, pictures

    out = to_openvino("glm4v-tiny", tmp_path / "w8a8", weight_format="int8", vision_format="w8a8", quiet=True)
    m = _manifest(out)
    assert m["settings"]["vision_weight_format"] == "w8a8"
    assert m["settings"]["vision_calibration"] == {"pictures": 8, "from": "generated"}
    assert m["verification"]["image_prompt"] and m["verification"]["top1_agreement"] >= 0.93, m["verification"]
    tower = ov.Core().read_model(out / VISION_XML)
    quantized = [op for op in tower.get_ops() if op.get_type_name() == "FakeQuantize"]
    layers = open_checkpoint(embedded.path("glm4v-tiny")).config["vision_config"]["num_hidden_layers"]
    assert len(quantized) >= 4 * layers, len(quantized)  # q/k/v, dense, fc1, fc2 read int8 activations
    assert "i8" in m["weight_precisions"]["openvino_vision_embeddings_model"]
    source = _manifest(embedded.path("glm4v-tiny"))["held_out"]["accuracy"]  # equal to the source's: test above
    with load(str(out), dtype="float32") as rt:
        ir = pictures.accuracy(lambda m: rt.generate(m, GenerationConfig(max_new_tokens=4)).text,
                               pictures.held_out(80))
    assert abs(ir["accuracy"] - source) <= 0.02, (ir, source)


def test_the_towers_calibration_pictures_are_not_the_held_out_ones():
    from glmkit.sources import pictures

    held = {t["image"].tobytes() for t in pictures.held_out(80)}
    assert not {p.tobytes() for p in pictures.calibration(8)} & held


def test_a_glm4v_export_this_machine_cannot_hold_is_refused_first(tiny, monkeypatch):
    """On a 24 GB machine GLM-4V-9B (bf16) exports to int4/int8 — its language model stays memory-mapped, its
    4.5 B-parameter tower is read in bf16 — but fp16 needs a converted 18.8 GB copy of the language model and is
    refused before any work, saying which precisions fit; a model past any machine is refused likewise."""
    import math
    from types import SimpleNamespace

    import psutil

    from glmkit.convert import preflight
    from glmkit.convert.openvino_glm4v import vision_parameters

    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=24 * 2**30, available=20 * 2**30))
    monkeypatch.setattr(psutil, "swap_memory", lambda: SimpleNamespace(total=0))
    vision = sum(math.prod(s) for s in synthetic.vision_tensors("glm-4v-9b").values())
    language = synthetic.num_parameters("glm-4v-9b", 151_552, "glm4v") - vision
    assert 9.3e9 < language < 9.5e9 and 4.4e9 < vision < 4.6e9
    preflight.check_glm4v_export_memory(language, vision, 2, converted=False)
    with pytest.raises(GlmkitError, match=r"language model \(9.4 B .* converted copy.*int8/int4"):
        preflight.check_glm4v_export_memory(language, vision, 2, converted=True)
    with pytest.raises(GlmkitError, match="vision tower"):
        preflight.check_glm4v_export_memory(10, 10 * vision, 2, converted=False)
    preflight.check_glm4v_export_memory(tiny.num_parameters() - vision_parameters(tiny), vision_parameters(tiny), 4,
                                        converted=False)
    assert 0 < vision_parameters(tiny) < tiny.num_parameters()
