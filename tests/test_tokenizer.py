import json

import pytest
from conftest import TEXT

from glmkit.convert import GlmkitError
from glmkit.glm4 import families
from glmkit.sources import embedded, tokenizer


def _hf(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("text", [TEXT, "", " ", "\n\n\n", "a" * 500, "٣٤٥ ١٢ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 e\u0301 \u200b\ufeff"])
def test_round_trips_multilingual_code_and_emoji(text):
    tok = _hf(embedded.glm4_tiny_path())
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_special_tokens_are_single_ids_after_the_ranks():
    tok = _hf(embedded.glm4_tiny_path())
    ids = tok.encode("[gMASK]<sop><|user|>\nhi<|assistant|>\n", add_special_tokens=False)
    base = embedded.GLM4_TINY_REGULAR
    assert ids[:3] == [base + 2, base + 4, base + 7]
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == base


def test_pre_tokenizer_is_glm4_regex():
    data = json.loads((embedded.glm4_tiny_path() / "tokenizer.json").read_text())
    tokenizer.check_pretokenizer(data)
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\w+"
    with pytest.raises(GlmkitError, match="not GLM-4's regex"):
        tokenizer.check_pretokenizer(data)


def test_tiktoken_file_converts_to_the_same_ids(synthetic):
    """The original format's tokenizer.model, converted without remote code, tokenizes like tokenizer.json."""
    fast = tokenizer.tiktoken_to_fast(synthetic("chatglm") / "tokenizer.model")
    ref = _hf(synthetic("glm"))
    for text in (TEXT, "[gMASK]<sop><|system|>\nsys<|user|>\n" + TEXT + "<|assistant|>\n"):
        assert fast.encode(text).ids == ref.encode(text, add_special_tokens=False)


def test_big_shapes_use_the_real_special_ids(glmkit_cache):
    from glmkit.sources import synthetic

    tok, vocab_size = synthetic._tokenizer("bench", glmkit_cache, quiet=True)
    assert vocab_size == families.REAL_VOCAB_SIZE
    assert {t: tok.token_to_id(t) for t in families.SPECIAL_TOKENS} == families.REAL_SPECIAL_IDS
    assert tok.decode(tok.encode(TEXT).ids) == TEXT
