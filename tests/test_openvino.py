"""glm-convert --to openvino on tiny checkpoints of all three families, and parity with transformers."""

import json

import pytest
from conftest import glm_convert

from glmkit.convert import GlmkitError
from glmkit.convert.openvino import Compression, calibration_texts, group_size_warnings, to_openvino
from glmkit.glm4.errors import VerificationError

INT = ("u4", "i4", "u8", "i8")
FORMATS = {"fp16": {"weight_format": "fp16"}, "int8": {"weight_format": "int8"},
           "int4": {"weight_format": "int4"}, "npu": {"weight_format": "int4", "profile": "npu"}}


@pytest.fixture(scope="module")
def converted(tmp_path_factory, glmkit_cache):
    made = {}

    def get(family, fmt):
        if (family, fmt) not in made:
            out = tmp_path_factory.mktemp("ov") / f"{family}-{fmt}"
            made[family, fmt] = to_openvino(f"synthetic:{family}:tiny", out, quiet=True, **FORMATS[fmt])
        return made[family, fmt]
    return get


def _precisions(path):
    return json.loads((path / "glmkit.json").read_text())["weight_precisions"]


@pytest.mark.parametrize("family", ["glm4", "glm", "chatglm"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_ir_holds_the_requested_weight_precisions(converted, family, fmt):
    out = converted(family, fmt)
    p = _precisions(out)
    total = sum(p.values())
    if fmt == "fp16":
        assert set(p) == {"f16"}
    elif fmt == "int8":
        assert not {"u4", "i4"} & set(p) and p.get("u8", 0) / total > 0.99  # asym per-channel int8 everywhere
    elif fmt == "int4":  # asym g128, ratio 0.8: most transformer layers u4, embeddings and the rest u8
        assert p.get("u4", 0) > 0 and p.get("u8", 0) > 0 and "i4" not in p
    else:  # npu: symmetric int4 (i4, no zero points) in every transformer layer
        assert p.get("i4", 0) > 0 and "u4" not in p
    for f in ("openvino_model.xml", "openvino_tokenizer.xml", "openvino_detokenizer.xml", "glmkit.json"):
        assert (out / f).is_file()
    manifest = json.loads((out / "glmkit.json").read_text())
    assert manifest["family"] == family and manifest["verification"]["tokens"] > 100
    assert manifest["settings"]["profile"] == FORMATS[fmt].get("profile", "cpu")


def test_chatglm_source_exports_without_remote_code(converted):
    out = converted("chatglm", "fp16")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "glm" and "auto_map" not in cfg and not list(out.glob("*.py"))
    assert json.loads((out / "glmkit.json").read_text())["verification"]["top1_agreement"] == 1.0


def test_generation_config_stops_on_glm4_stop_tokens(converted):
    out = converted("glm4", "fp16")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.convert_tokens_to_ids(["<|endoftext|>", "<|user|>", "<|observation|>"])


def test_llmpipeline_runs_the_output_as_is_and_matches_transformers_greedy(converted, synthetic):
    """fp16 IR through openvino_genai.LLMPipeline: same prompt ids and same 40 greedy tokens as transformers."""
    import openvino_genai as ov_genai
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, src = converted("glm4", "fp16"), synthetic("glm4")
    tok = AutoTokenizer.from_pretrained(src)
    prompt = tok.apply_chat_template([{"role": "user", "content": "def fib(n):"}], add_generation_prompt=True,
                                     tokenize=False)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    ref = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=None, pad_token_id=0)
    ref = ref[0, ids.shape[1]:].tolist()

    pipe = ov_genai.LLMPipeline(str(out), "CPU", INFERENCE_PRECISION_HINT="f32")
    enc = pipe.get_tokenizer().encode(prompt, add_special_tokens=False)
    assert enc.input_ids.data[0].tolist() == ids[0].tolist()
    cfg = ov_genai.GenerationConfig(max_new_tokens=40, do_sample=False, ignore_eos=True)
    got = pipe.generate(enc, cfg).tokens[0]
    assert list(got) == ref


def test_npu_profile_refuses_what_npu_cannot_run():
    with pytest.raises(GlmkitError, match="symmetric"):
        Compression(profile="npu", sym=False).resolved()
    with pytest.raises(GlmkitError, match="ratio 1.0"):
        Compression(profile="npu", ratio=0.8).resolved()
    with pytest.raises(GlmkitError, match="-1 .*or 128"):
        Compression(profile="npu", group_size=64).resolved()
    s = Compression(profile="npu").resolved()
    assert (s["sym"], s["group_size"], s["ratio"]) == (True, -1, 1.0)
    s = Compression(profile="cpu").resolved()
    assert (s["sym"], s["group_size"], s["ratio"], s["gptq"], s["dataset"]) == (False, 32, 1.0, True, "embedded")
    s = Compression(profile="cpu", data_free=True).resolved()  # THUDM's recipe, no calibration
    assert (s["sym"], s["group_size"], s["ratio"], s["gptq"], s["dataset"]) == (False, 128, 0.8, False, None)


def test_cli_refusals_come_before_any_work(tmp_path):
    for args, words in (((["--profile", "npu", "--asym"]), "symmetric"),
                        ((["--profile", "npu", "--ratio", "0.9"]), "ratio 1.0"),
                        ((["--dataset", str(tmp_path / "none.txt"), "--awq"]), "no such file")):
        out = tmp_path / "out"
        r = glm_convert("synthetic:glm4:tiny", "--to", "openvino", "-o", out, *args)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_group_size_that_does_not_divide_falls_back_with_a_warning():
    cfg = {"hidden_size": 1024, "intermediate_size": 3424, "num_attention_heads": 16, "head_dim": 64}
    assert group_size_warnings(cfg, 128) == ["group size 128 does not divide intermediate_size = 3424"]
    assert group_size_warnings(cfg, -1) == []


def test_calibration_texts_are_offline_and_bounded(tmp_path):
    emb = calibration_texts("embedded", 8)
    assert len(emb) == 8 and all(len(t) > 100 for t in emb)
    f = tmp_path / "cal.txt"
    f.write_text("\n\n".join(f"paragraph {i} " * 40 for i in range(30)))
    assert 1 < len(calibration_texts(str(f), 100)) <= 30


def test_verification_failure_exits_3_and_keeps_the_output_aside(tmp_path, monkeypatch):
    """A broken conversion (here: a doctored threshold no int4 reaches) is not put at OUT."""
    from glmkit.convert import verify

    monkeypatch.setitem(verify.THRESHOLDS, "int8", 1.01)
    out = tmp_path / "out"
    with pytest.raises(VerificationError, match="rejected"):
        to_openvino("glm4-tiny", out, weight_format="int8", quiet=True)
    assert not out.exists() and (tmp_path / "out.rejected" / "openvino_model.xml").is_file()


def test_killed_conversion_leaves_nothing_at_out(tmp_path, synthetic):
    """SIGTERM while optimum-intel is exporting: no OUT, no partial, no staging directory."""
    import os
    import signal
    import subprocess
    import sys
    import time

    synthetic("chatglm")  # made beforehand, so the kill lands in the conversion itself
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "glmkit.convert", "synthetic:chatglm:tiny", "--to", "openvino",
                          "-o", str(out), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ)
    deadline = time.time() + 120
    while time.time() < deadline and not any(x.name.endswith(".partial") for x in tmp_path.iterdir()):
        time.sleep(0.02)
    assert p.poll() is None, "conversion finished before it could be interrupted"
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    assert p.returncode == 130, p.stderr.read()
    assert list(tmp_path.iterdir()) == []


def test_yarn_rope_scaling_is_baked_in_and_verified(tmp_path):
    out = to_openvino("synthetic:glm4:tiny", tmp_path / "yarn", weight_format="fp16", rope_scaling="yarn:4",
                      quiet=True)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_scaling"]["factor"] == 4.0 and cfg["rope_scaling"]["original_max_position_embeddings"] == 32768
    m = json.loads((out / "glmkit.json").read_text())
    assert m["rope_scaling"]["type"] == "yarn" and m["verification"]["top1_agreement"] >= 0.98
    with pytest.raises(GlmkitError, match="yarn:FACTOR"):
        to_openvino("synthetic:glm4:tiny", tmp_path / "bad", weight_format="fp16", rope_scaling="linear:2")


def test_info_prints_the_manifest(converted):
    r = glm_convert("--info", converted("glm4", "int4"))
    assert r.returncode == 0, r.stderr
    assert "weight_precisions" in r.stdout and "verification" in r.stdout and "u4" in r.stdout
    r = glm_convert("--info", converted("glm4", "int4").parent)
    assert r.returncode == 2 and "no glmkit manifest" in r.stderr


@pytest.mark.parametrize("method", [{"awq": True, "scale_estimation": True}, {"gptq": True}])
def test_data_aware_int4_runs_offline_on_the_embedded_text(tmp_path, method):
    out = to_openvino("glm4-tiny", tmp_path / "da", weight_format="int4", num_samples=8, quiet=True, **method)
    m = json.loads((out / "glmkit.json").read_text())
    assert m["settings"]["dataset"] == "embedded" and m["settings"]["num_samples"] == 8
    assert all(m["settings"][k] for k in method)
    assert m["weight_precisions"].get("u4", 0) > 0 and m["verification"]["passed"]


def test_group_size_fallback_converts_instead_of_failing(tmp_path, capfd):
    """96 divides no hidden size of the tiny shape (128, 256): NNCF alone raises InvalidGroupSizeError."""
    out = to_openvino("synthetic:glm4:tiny", tmp_path / "g96", weight_format="int4", group_size=96, quiet=False)
    assert "group size 96 does not divide hidden_size = 128" in capfd.readouterr().err
    assert json.loads((out / "glmkit.json").read_text())["weight_precisions"].get("u4", 0) > 0


def test_verification_that_cannot_fit_whole_runs_block_by_block(tmp_path, monkeypatch):
    """A 9B model's fp32 reference (37.6 GB) does not fit a 24 GB machine: the source then runs one block at a
    time, and the figures are the whole model's; only a candidate that cannot run here skips."""
    import psutil

    whole = json.loads((to_openvino("glm4-tiny", tmp_path / "w", weight_format="int8", quiet=True)
                        / "glmkit.json").read_text())["verification"]

    class Tight:
        available = 64 << 20
        total = 24 << 30

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tight())
    v = json.loads((to_openvino("glm4-tiny", tmp_path / "o", weight_format="int8", quiet=True)
                    / "glmkit.json").read_text())["verification"]
    assert whole["reference"] == "transformers fp32, whole model"
    assert v["reference"] == "transformers fp32, block by block" and v["passed"]
    assert v["top1_agreement"] == whole["top1_agreement"] and abs(v["mean_kl"] - whole["mean_kl"]) < 1e-4
    Tight.total = 1 << 20
    v = json.loads((to_openvino("synthetic:glm4:tiny", tmp_path / "s", weight_format="int8", quiet=True)
                    / "glmkit.json").read_text())["verification"]
    assert v["skipped"].startswith("verification skipped: the converted model needs")


def test_data_aware_int4_memory_does_not_grow_with_depth(tmp_path, monkeypatch, glmkit_cache):
    """What NNCF calibrates holds its float weights in memory: at 2 and 8 blocks of one width, the largest model
    handed to it with calibration data is one block (the whole-model way grew with every block). The IR it makes
    is the whole model's, every decoder weight int4, equal in scheme to a data-free export of the same shape."""
    import nncf
    import numpy as np
    from conftest import depth_checkpoint

    real, largest = nncf.compress_weights, {}

    def watched(model, *args, dataset=None, **kw):
        if dataset is not None:
            floats = sum(int(np.prod(op.get_output_shape(0))) * op.get_element_type().size
                         for op in model.get_ops() if op.get_type_name() == "Constant"
                         and op.get_element_type().is_real())
            largest[depth] = max(largest.get(depth, 0), floats)
        return real(model, *args, dataset=dataset, **kw)

    monkeypatch.setattr(nncf, "compress_weights", watched)
    precisions = {}
    for depth in (2, 8):
        src = depth_checkpoint(tmp_path, depth, monkeypatch)
        out = to_openvino(str(src), tmp_path / f"ov{depth}", weight_format="int4", num_samples=4, verify=False,
                          quiet=True)
        precisions[depth] = json.loads((out / "glmkit.json").read_text())
    assert largest[8] <= 1.01 * largest[2], largest
    for m in precisions.values():
        assert m["settings"]["gptq"] and m["settings"]["calibration"] == "one decoder block at a time"
    precisions = {d: m["weight_precisions"] for d, m in precisions.items()}
    per_block = (precisions[8]["u4"] - precisions[2]["u4"]) / 6
    assert precisions[2]["u4"] == 2 * per_block and precisions[8]["u4"] == 8 * per_block
