"""glm-convert --to gguf: llama.cpp loads every family, logits and token ids match transformers."""

import json

import pytest
from conftest import TEXT, glm_convert

from glmkit.convert import GlmkitError
from glmkit.convert.gguf import to_gguf

MULTILINGUAL = TEXT + "\n中文测试：模型转换。日本語のテキスト。한국어 문장입니다. Русский текст. النص العربي. " \
    "Deutsche Umlaute: äöüß. 😀🎉👍🏽 \t\t  spaces   \n\n\n  1234567890 99.5% x**2+y**2 {'a': [1, 2]}"


@pytest.fixture(scope="module")
def converted(tmp_path_factory, glmkit_cache):
    made = {}

    def get(family, outtype="f32"):
        if (family, outtype) not in made:
            out = tmp_path_factory.mktemp("gguf") / f"{family}-{outtype}.gguf"
            made[family, outtype] = to_gguf(f"synthetic:{family}:tiny", out, outtype=outtype, quiet=True)
        return made[family, outtype]
    return get


def _manifest(path):
    return json.loads(path.with_name(path.name + ".glmkit.json").read_text())


def _metadata(path):
    """Exact metadata through gguf-py's reader (llama-cpp-python prints floats with 6 decimals)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    skip = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")  # big lists
    return {k: f.contents() for k, f in reader.fields.items() if k not in skip}


@pytest.mark.parametrize("family", ["glm4", "glm", "chatglm"])
def test_f32_logits_match_transformers(converted, family):
    v = _manifest(converted(family))["verification"]
    assert v["top1_agreement"] == 1.0 and v["max_abs_logit_diff"] < 1e-4, v


def test_glm_family_metadata_comes_from_the_right_config_fields(converted):
    """llama.cpp's own converter writes context = hidden size, rope base 10000, eps 1e-5 for GlmForCausalLM."""
    for family in ("glm", "chatglm"):
        md = _metadata(converted(family))
        assert md["general.architecture"] == "chatglm"
        assert int(md["chatglm.context_length"]) == 131072
        assert float(md["chatglm.rope.freq_base"]) == 5_000_000.0
        assert float(md["chatglm.attention.layer_norm_rms_epsilon"]) == pytest.approx(1.5625e-07)
        assert int(md["chatglm.rope.dimension_count"]) == 16  # half of head_dim 32
        assert md["tokenizer.ggml.pre"] == "glm4"  # tiktoken's whole-token rule (tests/test_tokenisation.py)
    md = _metadata(converted("glm4"))
    assert (md["general.architecture"], int(md["glm4.context_length"]), md["tokenizer.ggml.pre"]) == \
        ("glm4", 32768, "glm4")


@pytest.mark.parametrize("family", ["glm4", "chatglm"])
def test_tokenization_parity_on_multilingual_text(converted, synthetic, family):
    import llama_cpp
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(synthetic("glm4"))
    llm = llama_cpp.Llama(str(converted(family)), vocab_only=True, verbose=False)
    for text in (MULTILINGUAL, "[gMASK]<sop><|user|>\n" + MULTILINGUAL + "<|assistant|>\n"):
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == \
            ref(text, add_special_tokens=False)["input_ids"]
    llm.close()


def test_stop_tokens_end_generation_in_llama_cpp(converted, synthetic):
    import llama_cpp
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(synthetic("glm4"))
    llm = llama_cpp.Llama(str(converted("glm4")), vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    is_eog = {t: llama_cpp.llama_vocab_is_eog(vocab, tok.convert_tokens_to_ids(t))
              for t in ("<|endoftext|>", "<|user|>", "<|observation|>", "<|assistant|>", "[gMASK]")}
    assert is_eog == {"<|endoftext|>": True, "<|user|>": True, "<|observation|>": True, "<|assistant|>": False,
                      "[gMASK]": False}
    llm.close()


def test_embedded_chat_template_builds_the_transformers_prompt(converted, synthetic):
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from transformers import AutoTokenizer

    path = converted("glm4")
    md = _metadata(path)
    template = md["tokenizer.chat_template"]
    assert "[gMASK]<sop>" in template  # how llama.cpp recognises the GLM-4 chat format
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 你好"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "def fib(n):"}]
    fmt = Jinja2ChatFormatter(template=template, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    prompt = fmt(messages=msgs).prompt
    tok = AutoTokenizer.from_pretrained(synthetic("glm4"))
    assert prompt == tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == \
        tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    llm.close()


def test_tokenizer_with_an_added_token_converts(synthetic, tmp_path):
    """A fine-tune's added token (llama.cpp's converter refuses such tokenizers by hash) converts and round-trips."""
    import llama_cpp
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tmp_path / "finetune"
    tok = AutoTokenizer.from_pretrained(synthetic("glm4"))
    tok.add_tokens(["<|tool_call|>"])
    model = AutoModelForCausalLM.from_pretrained(synthetic("glm4"), dtype=torch.float32)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(src)
    tok.save_pretrained(src)
    out = to_gguf(str(src), tmp_path / "ft.gguf", outtype="f32", quiet=True)
    assert _manifest(out)["verification"]["top1_agreement"] == 1.0
    llm = llama_cpp.Llama(str(out), vocab_only=True, verbose=False)
    text = "call <|tool_call|> now"
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<|tool_call|>") in llm.tokenize(text.encode(), add_bos=False, special=True)
    llm.close()


def test_foreign_pre_tokenizer_is_refused(synthetic, tmp_path):
    import shutil

    src = tmp_path / "foreign"
    shutil.copytree(synthetic("glm4"), src)
    data = json.loads((src / "tokenizer.json").read_text())
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\w+"
    (src / "tokenizer.json").write_text(json.dumps(data))
    out = tmp_path / "x.gguf"
    r = glm_convert(src, "--to", "gguf", "-o", out)
    assert r.returncode == 2 and "not GLM-4's regex" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["foreign"]


@pytest.mark.parametrize("outtype,ftype", [("q8_0", 7), ("q4_0", 2), ("q4_k_m", 15)])
def test_quantized_types(converted, outtype, ftype):
    path = converted("glm4", outtype)
    assert int(_metadata(path)["general.file_type"]) == ftype
    m = _manifest(path)
    assert m["settings"]["outtype"] == outtype and m["verification"]["tokens"] > 100
    assert path.stat().st_size < converted("glm4", "f32").stat().st_size / 2.5


def test_bad_outtype_is_refused():
    with pytest.raises(GlmkitError, match="--outtype"):
        to_gguf("synthetic:glm4:tiny", "x.gguf", outtype="q3_k")


def test_verification_failure_keeps_the_file_aside(tmp_path, monkeypatch):
    from glmkit.convert import verify
    from glmkit.glm4.errors import VerificationError

    monkeypatch.setitem(verify.THRESHOLDS, "q8_0", 1.01)  # a bar no quantized file reaches
    out = tmp_path / "m.gguf"
    with pytest.raises(VerificationError, match="rejected"):
        to_gguf("glm4-tiny", out, outtype="q8_0", quiet=True)
    rejected = tmp_path / "m.gguf.rejected"
    assert not out.exists() and rejected.read_bytes()[:4] == b"GGUF"
    assert json.loads((tmp_path / "m.gguf.rejected.glmkit.json").read_text())["verification"]["passed"] is False
    assert json.loads((tmp_path / "m.gguf.rejected.glmkit.json").read_text())["source"]["weights_fingerprint"]
