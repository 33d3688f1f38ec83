"""Quantization at its best per byte: importance matrices, every llama.cpp type, overrides, --max-size, and
calibration that never touches the held-out text. References are independent: torch hooks on transformers for
the importance matrix, llama.cpp itself for what needs one, optimum-intel's own default for OpenVINO int4."""

import json
import struct

import numpy as np
import pytest
from conftest import glm_convert

from glmkit.convert import GlmkitError, calibration, gguf_types
from glmkit.convert import imatrix as im
from glmkit.convert.gguf import to_gguf
from glmkit.sources.embedded import glm4_tiny_path, held_out_text


def _shingles(text, n=4):
    lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) > 20]
    return {tuple(lines[i:i + n]) for i in range(len(lines) - n + 1)}


def test_calibration_and_held_out_text_are_disjoint():
    from glmkit.convert.openvino import calibration_texts
    from glmkit.convert.verify import verification_text

    cal = calibration.calibration_text("embedded")
    assert len(cal) > 100_000 and not _shingles(cal) & _shingles(held_out_text())
    assert not _shingles(cal) & _shingles(verification_text())
    for sample in calibration_texts("embedded", 64):  # what NNCF is given
        assert sample[:200] in cal and sample[:200] not in held_out_text()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, glmkit_cache):
    root = tmp_path_factory.mktemp("quant")
    f32 = to_gguf("glm4-tiny", root / "f32.gguf", outtype="f32", verify=False, quiet=True)
    f16 = to_gguf("glm4-tiny", root / "f16.gguf", outtype="f16", verify=False, quiet=True)
    chunks = calibration.token_chunks(glm4_tiny_path(), "embedded", 4)
    return {"root": root, "f32": f32, "f16": f16, "chunks": chunks, "imatrix": im.compute(f32, chunks)}


def test_imatrix_equals_torch_hooks_on_the_source(tiny):
    """llama.cpp's eval callback on the f32 GGUF against forward hooks on transformers' Linear layers."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    net = AutoModelForCausalLM.from_pretrained(str(glm4_tiny_path()), dtype=torch.float32)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GLM4, net.config.num_hidden_layers)
    sums, counts = {}, {}

    def hook(name):
        def f(module, inputs, output):
            x = inputs[0][0].double()
            sums[name] = sums.get(name, 0) + (x * x).sum(0).numpy()
            counts[name] = counts.get(name, 0) + x.shape[0]
        return f

    for name, mod in net.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.startswith("model.layers."):
            mod.register_forward_hook(hook(names.get_name(name + ".weight", try_suffixes=(".weight",))))
    with torch.no_grad():
        for c in tiny["chunks"]:
            net(torch.tensor([c]))
    m = tiny["imatrix"]
    assert set(m.sums) == set(sums) and len(sums) == 6 * net.config.num_hidden_layers
    assert m.counts == counts == {n: 4 * 512 for n in sums}
    for n in sums:
        np.testing.assert_allclose(m.sums[n] / m.counts[n], sums[n] / counts[n], rtol=2e-3)


def test_imatrix_from_the_source_block_by_block_equals_llama_cpp(tiny):
    """glmkit's conversions compute the importance matrix on the streamed source, one block at a time; llama.cpp's
    eval callback on the f32 GGUF is the reference."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GLM4, 4)  # glm4-tiny's blocks
    m, ref = im.from_source(glm4_tiny_path(), tiny["chunks"], names), tiny["imatrix"]
    assert set(m.sums) == set(ref.sums) and m.counts == ref.counts and m.chunk_count == ref.chunk_count
    for n in ref.sums:
        np.testing.assert_allclose(m.sums[n] / m.counts[n], ref.sums[n] / ref.counts[n], rtol=2e-3)


def test_imatrix_files_round_trip_llama_cpp_formats(tiny, tmp_path):
    from gguf import GGUFReader

    m = tiny["imatrix"]
    path = im.save(m, tmp_path / "tiny.imatrix.gguf")
    r = GGUFReader(path)
    assert r.fields["general.type"].contents() == "imatrix" and "general.architecture" not in r.fields
    assert r.fields["imatrix.chunk_count"].contents() == 4 and r.fields["imatrix.chunk_size"].contents() == 512
    shapes = {t.name: tuple(t.shape) for t in r.tensors}  # gguf-py reports ne order: [cols, n_mat]
    assert shapes["blk.0.ffn_down.weight.in_sum2"] == (384, 1) and shapes["blk.0.ffn_down.weight.counts"] == (1, 1)
    back = im.load(path)
    assert back.counts == m.counts
    for n in m.sums:
        np.testing.assert_allclose(back.weights()[n], m.weights()[n], rtol=1e-6)
    # the legacy .dat as llama.cpp writes it: entries (name, ncall, column means × ncall), chunk count, dataset
    dat = tmp_path / "legacy.dat"
    values = np.arange(1, 257, dtype=np.float32)
    name = b"blk.0.attn_q.weight"
    dat.write_bytes(struct.pack("<ii", 1, len(name)) + name + struct.pack("<ii", 3, 256) + (values * 3).tobytes()
                    + struct.pack("<ii", 7, 4) + b"text")
    legacy = im.load(dat)
    np.testing.assert_allclose(legacy.weights()["blk.0.attn_q.weight"], values, rtol=1e-6)
    assert legacy.chunk_count == 7 and legacy.datasets == ["text"]
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(GlmkitError, match="not a readable llama.cpp imatrix"):
        im.load(tmp_path / "bad.gguf")


def test_every_type_quantizes_loads_and_asks_for_an_imatrix_exactly_when_llama_cpp_needs_one(tiny):
    import gguf
    import llama_cpp
    from gguf import GGUFReader

    weights = tiny["imatrix"].weights()
    for name in gguf_types.QUANTIZED:
        t = gguf_types.TYPES[name]
        out = tiny["root"] / f"{name}.gguf"
        try:  # llama.cpp itself decides which types need importance data
            gguf_types.quantize(tiny["f16"], out, name)
            refused = False
        except GlmkitError as e:
            refused = "needs an importance matrix" in str(e)
            assert refused, e
        assert refused == t.needs_imatrix, name
        gguf_types.quantize(tiny["f16"], out, name, imatrix=weights)
        assert GGUFReader(out).fields["general.file_type"].contents() == gguf.LlamaFileType[t.ftype].value
        # logits_all: without it llama-cpp-python leaves `scores` as allocated (uninitialised memory)
        llm = llama_cpp.Llama(str(out), n_ctx=64, logits_all=True, verbose=False)
        llm.eval(tiny["chunks"][0][:16])
        logits = llm.scores[15]
        assert np.isfinite(logits).all() and logits.std() > 0, name
        llm.close()
        out.unlink()


def test_tensor_type_overrides_land_on_the_named_tensors(tiny):
    from gguf import GGUFReader

    out = tiny["root"] / "ov.gguf"
    overrides = [gguf_types.Override.parse(r"attn_v=q8_0"), gguf_types.Override.parse(r"^token_embd\.=Q6_K")]
    gguf_types.quantize(tiny["f16"], out, "q4_k_m", overrides=overrides)
    types = {t.name: t.tensor_type.name for t in GGUFReader(out).tensors}
    assert {types[f"blk.{i}.attn_v.weight"] for i in range(4)} == {"Q8_0"} and types["token_embd.weight"] == "Q6_K"
    assert types["blk.0.attn_q.weight"] == "Q4_K"  # the rest as q4_k_m chooses
    with pytest.raises(GlmkitError, match="no tensor name matches"):
        gguf_types.check_overrides([gguf_types.Override.parse("attn_x=q8_0")], list(types), has_imatrix=False)
    with pytest.raises(GlmkitError, match="needs an importance matrix"):
        gguf_types.check_overrides([gguf_types.Override.parse("attn_v=iq2_xs")], list(types), has_imatrix=False)
    for bad in ("attn_v", "attn_v=q9_9", "[=q8_0"):
        with pytest.raises(GlmkitError, match="--tensor-type"):
            gguf_types.Override.parse(bad)


@pytest.mark.parametrize("base,groups", [("q4_k_s", ["attn_q"]), ("iq2_m", ["token_embd", "ffn_down", "attn_v"])])
def test_a_spliced_probe_is_the_file_llama_cpp_writes_with_those_overrides(tiny, base, groups):
    """--max-size splices a group's raise from a higher file instead of quantizing again: that must be exactly
    what llama.cpp's quantizer writes for the same overrides, byte for byte."""
    from glmkit.convert.recipe import FILLER, GROUPS
    from glmkit.convert.splice import splice

    root, weights = tiny["root"], tiny["imatrix"].weights()
    patterns = [GROUPS[g] for g in groups]
    gguf_types.quantize(tiny["f16"], root / "base.gguf", base, imatrix=weights)
    gguf_types.quantize(tiny["f16"], root / "q6_k.gguf", "q6_k", imatrix=weights,
                        overrides=[gguf_types.Override(GROUPS["ffn_up"], FILLER)])  # a group not taken
    gguf_types.quantize(tiny["f16"], root / "llama.gguf", base, imatrix=weights,
                        overrides=[gguf_types.Override(p, "q6_k") for p in patterns])
    n = splice(root / "base.gguf", root / "q6_k.gguf", patterns, root / "spliced.gguf")
    assert (root / "spliced.gguf").read_bytes() == (root / "llama.gguf").read_bytes() and n > 0
    assert (root / "spliced.gguf").read_bytes() != (root / "base.gguf").read_bytes()


@pytest.mark.parametrize("args,words", [(["--outtype", "iq2_xs"], "needs an importance matrix"),
                                        (["--outtype", "q5_7"], "choose one of"),
                                        (["--max-size", "100KB"], "smallest GGUF"),
                                        (["--max-size", "lots"], "give bytes or a size"),
                                        (["--memory", "100MB"], "leave nothing for the weights"),
                                        (["--outtype", "iq2_m", "--method", "autoround"], "--method autoround writes"),
                                        (["--outtype", "q4_k_m", "--method", "autoround", "--imatrix", "embedded"],
                                         "drop --imatrix"),
                                        (["--outtype", "q4_k_m", "--iters", "5"], "add --method autoround"),
                                        (["--outtype", "q4_k_m", "--tensor-type", "nothing_here=q8_0"],
                                         "no tensor name matches"),
                                        (["--outtype", "f16", "--imatrix", "embedded"], "not quantized")])
def test_impossible_quantization_options_are_refused_in_one_line(tmp_path, args, words):
    out = tmp_path / "x.gguf"
    r = glm_convert("glm4-tiny", "--to", "gguf", "-o", out, *args)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def held_out_kl(path, backend="auto"):
    """Mean KL against glm4-tiny's fp32 source over 8 × 512 held-out tokens (the issue's measure)."""
    from glmkit.convert.verify import compare
    from glmkit.runtimes.logits import logits
    from glmkit.sources.tokenizer import load_hf_tokenizer

    tok = load_hf_tokenizer(glm4_tiny_path())
    ids = tok(held_out_text(), add_special_tokens=False)["input_ids"]
    prefix = tok("[gMASK]<sop>", add_special_tokens=False)["input_ids"]
    chunks = [prefix + ids[i * 510:(i + 1) * 510] for i in range(8)]
    ref = np.concatenate([logits(str(glm4_tiny_path()), c, backend="transformers") for c in chunks])
    got = np.concatenate([logits(str(path), c, backend=backend) for c in chunks])
    return compare(ref, got, "x").mean_kl


@pytest.mark.parametrize("plain,factor", [("q4_k_m", 0.8), ("q2_k", 0.6)])
def test_max_size_beats_the_plain_type_of_that_size(tmp_path, plain, factor):
    base = to_gguf("glm4-tiny", tmp_path / f"{plain}.gguf", outtype=plain, verify=False, quiet=True)
    n = base.stat().st_size
    r = glm_convert("glm4-tiny", "--to", "gguf", "--max-size", n, "-o", tmp_path / "fit.gguf", "-q")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "fit.gguf"
    record = json.loads((tmp_path / "fit.gguf.glmkit.json").read_text())
    assert out.stat().st_size <= n and record["settings"]["max_size"]["chosen_bytes"] == out.stat().st_size
    assert record["settings"]["imatrix"]["dataset"] == "embedded" and record["verification"]["passed"]
    assert held_out_kl(out) <= factor * held_out_kl(base)


def test_openvino_int4_default_halves_optimum_intels_default_error_and_equals_whole_gptq(tmp_path):
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig

    from glmkit.convert.openvino import to_openvino

    theirs = tmp_path / "optimum"
    OVModelForCausalLM.from_pretrained(str(glm4_tiny_path()), export=True, compile=False,
                                       quantization_config=OVWeightQuantizationConfig(bits=4)).save_pretrained(theirs)
    ours = to_openvino("glm4-tiny", tmp_path / "ours", weight_format="int4", verify=False, quiet=True)
    size = lambda p: (p / "openvino_model.bin").stat().st_size  # noqa: E731
    assert size(ours) <= 1.08 * size(theirs)
    kl = held_out_kl(ours, "openvino")
    assert kl <= 0.5 * held_out_kl(theirs, "openvino")
    # glmkit calibrates one block at a time; NNCF's own GPTQ on the whole fp32 IR, same scheme and text, is the bar
    whole = tmp_path / "whole"
    q = OVWeightQuantizationConfig(bits=4, sym=False, group_size=32, ratio=1.0, gptq=True, num_samples=64,
                                   dataset=calibration.texts("embedded", 64), tokenizer=str(glm4_tiny_path()))
    OVModelForCausalLM.from_pretrained(str(glm4_tiny_path()), export=True, compile=False,
                                       quantization_config=q).save_pretrained(whole)
    assert size(ours) == size(whole)
    assert kl <= 1.05 * held_out_kl(whole, "openvino")


def test_glm_bench_quantize_sweeps_both_engines_and_marks_the_front(tmp_path):
    import csv
    import subprocess
    import sys

    from glmkit.benchmarks.quantize import pareto

    out = tmp_path / "sweep.json"
    r = subprocess.run([sys.executable, "-m", "glmkit.benchmarks", "quantize", "glm4-tiny", "--gguf",
                        "q8_0,q4_k_m,iq2_m+imatrix", "--openvino", "int8", "--tokens", "512", "--no-speed",
                        "-o", out, "-q"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    rows = {(x["engine"], x["recipe"]): x for x in json.loads(out.read_text())["rows"]}
    assert set(rows) == {("gguf", "q8_0"), ("gguf", "q4_k_m"), ("gguf", "iq2_m+imatrix"), ("openvino", "int8")}
    kl = {k: v["mean_kl"] for k, v in rows.items()}
    assert kl["gguf", "q8_0"] < kl["gguf", "q4_k_m"] < kl["gguf", "iq2_m+imatrix"]  # fewer bits, more error
    assert rows["gguf", "iq2_m+imatrix"]["bytes"] < rows["gguf", "q4_k_m"]["bytes"] < rows["gguf", "q8_0"]["bytes"]
    assert rows["gguf", "iq2_m+imatrix"]["pareto"] and rows["gguf", "q4_k_m"]["pareto"]  # smallest / between
    with open(out.with_suffix(".csv")) as f:
        assert len(list(csv.DictReader(f))) == 4
    assert out.with_suffix(".png").stat().st_size > 10_000 and "★" in out.with_suffix(".md").read_text()
    # the front: a row another beats on both size and KL is off it
    made = [{"bytes": 1, "mean_kl": 3.0}, {"bytes": 2, "mean_kl": 1.0}, {"bytes": 3, "mean_kl": 2.0}]
    pareto(made)
    assert [m["pareto"] for m in made] == [True, True, False]


def test_memory_leaves_room_for_the_kv_cache_and_the_runtime(tmp_path):
    out = tmp_path / "m.gguf"
    r = glm_convert("glm4-tiny", "--to", "gguf", "--memory", "200MB", "--n-ctx", "2048", "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    budget = json.loads((tmp_path / "m.gguf.glmkit.json").read_text())["settings"]["memory"]
    # glm4-tiny: 4 layers × 2 KV heads × 64 × (K and V) × 2 bytes per token
    assert budget["kv_cache_f16"] == 2048 * 4 * 2 * 64 * 2 * 2
    assert budget["kv_cache_f16"] + budget["runtime"] + budget["weights"] == 200_000_000
    assert out.stat().st_size <= budget["weights"]


def test_openvino_max_size_writes_the_most_faithful_recipe_that_fits(tmp_path):
    from glmkit.convert.recipe import OPENVINO_LADDER

    out = tmp_path / "ov"
    r = glm_convert("glm4-tiny", "--to", "openvino", "--max-size", "3.9MB", "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "glmkit.json").read_text())
    chosen = m["settings"]["max_size"]["chosen"]
    assert sum(f.stat().st_size for f in out.iterdir() if f.name != "glmkit.json") <= 3_900_000
    assert m["verification"]["passed"] and chosen in dict(OPENVINO_LADDER)
    labels = [label for label, _ in OPENVINO_LADDER]
    for tried in m["settings"]["max_size"]["tried"][:-1]:  # every more faithful rung was over the size
        assert labels.index(tried["recipe"]) < labels.index(chosen)
        assert tried.get("bytes", tried["estimated_bytes"]) > 3_900_000
    r = glm_convert("glm4-tiny", "--to", "openvino", "--max-size", "1MB", "-o", tmp_path / "small")
    assert r.returncode == 2 and "give more room" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "small").exists()


def test_autoround_gguf_carries_glmkits_metadata_and_verifies(tmp_path):
    """AutoRound's own k-quant packing, with glmkit's header: as exported, its files add [gMASK] as BOS (prompts
    would start [gMASK][gMASK]<sop>) and lack <|observation|> as an end token."""
    from gguf import GGUFReader

    from glmkit.sources.tokenizer import load_hf_tokenizer

    out = to_gguf("glm4-tiny", tmp_path / "ar.gguf", outtype="q4_k_m", method="autoround", iters=0, quiet=True)
    m = json.loads((tmp_path / "ar.gguf.glmkit.json").read_text())
    assert m["settings"]["method"]["auto_round"] == "0.16.1" and m["settings"]["method"]["iters"] == 0
    assert m["verification"]["passed"] and m["verification"]["tokenizer"]["passed"]
    ids = load_hf_tokenizer(glm4_tiny_path()).get_vocab()
    f = GGUFReader(out).fields
    assert f["tokenizer.ggml.add_bos_token"].contents() is False and f["tokenizer.ggml.pre"].contents() == "glm4"
    assert f["tokenizer.ggml.bos_token_id"].contents() == ids["<|endoftext|>"]
    assert f["tokenizer.ggml.eom_token_id"].contents() == ids["<|observation|>"]
    assert f["general.file_type"].contents() == 15  # llama.cpp's MOSTLY_Q4_K_M, AutoRound's packing kept
    plain = to_gguf("glm4-tiny", tmp_path / "plain.gguf", outtype="q4_k_m", verify=False, quiet=True)
    assert held_out_kl(out) <= 1.05 * held_out_kl(plain)


def test_autoround_is_refused_for_openvino_with_the_reason(tmp_path):
    r = glm_convert("glm4-tiny", "--to", "openvino", "--method", "autoround", "-o", tmp_path / "ov")
    assert r.returncode == 2 and "q/k/v biases" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_int4_default_stays_data_aware_where_the_whole_model_cannot_fit(tmp_path, monkeypatch):
    """NNCF calibrating the whole fp32 IR needs 37.6 GB at GLM-4-9B's shape. The default (GPTQ, ratio 1.0)
    calibrates one block at a time instead and fits anywhere the export does; only AWQ, which inserts nodes across
    the model, still needs the whole model, and is refused before any work where it cannot fit."""
    from glmkit.convert import preflight
    from glmkit.convert.openvino import to_openvino

    monkeypatch.setattr(preflight, "CALIBRATION_BYTES_PER_PARAMETER", 1e6)  # as if glm4-tiny were huge
    out = to_openvino("glm4-tiny", tmp_path / "ov", weight_format="int4", num_samples=8, quiet=True)
    m = json.loads((out / "glmkit.json").read_text())
    s = m["settings"]
    assert (s["gptq"], s["group_size"], s["ratio"], s["dataset"]) == (True, 32, 1.0, "embedded")
    assert s["calibration"] == "one decoder block at a time" and m["verification"]["passed"]
    with pytest.raises(GlmkitError, match="drop --awq"):
        to_openvino("glm4-tiny", tmp_path / "ov2", weight_format="int4", awq=True, quiet=True)
    assert not (tmp_path / "ov2").exists()
