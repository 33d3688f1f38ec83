"""Tokenisation identical to GLM-4's own tokenizer on every backend.

GLM-4's tokenizer is tiktoken: a pre-token that is itself in the vocabulary is taken whole, before any merge, and
real GLM-4 vocabularies hold tokens no chain of pairwise merges reaches. glmkit's embedded tokenizers are fitted by
BPE training, where every token is reachable, so the defect never shows on them; this test builds a vocabulary
that has such tokens and checks every backend against tiktoken itself."""

import json
import shutil

import pytest
import regex

from glmkit.glm4 import families
from glmkit.sources import tokenizer
from glmkit.sources.corpus import TOKENIZER_PROBES

UNREACHABLE = 48  # whole words added to the vocabulary, in place of the last regular ranks


def _bpe_parts(ranks: dict[bytes, int], piece: bytes) -> int:
    """How many tokens plain BPE (merges only, lowest rank first) leaves for `piece`."""
    parts = [bytes([b]) for b in piece]
    while len(parts) > 1:
        pairs = [(ranks.get(a + b), i) for i, (a, b) in enumerate(zip(parts, parts[1:])) if a + b in ranks]
        if not pairs:
            break
        _, i = min(pairs)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return len(parts)


def defect_exposing_ranks(base: dict[bytes, int]) -> dict[bytes, int]:
    """glm4-tiny's ranks with their last ranks replaced by whole words of the probe texts that merges cannot reach
    (Cyrillic, CJK, Japanese, Korean, Arabic, Devanagari words, emoji sequences, full-width runs)."""
    pieces = [p.encode() for t in TOKENIZER_PROBES for p in regex.findall(families.PRETOKENIZER_REGEX, t)]
    kept = {t: r for t, r in base.items() if r < len(base) - UNREACHABLE}
    words = []
    for p in dict.fromkeys(pieces):
        if len(p) >= 4 and p not in kept and _bpe_parts(kept, p) > 2:
            words.append(p)
    assert len(words) >= UNREACHABLE, len(words)
    out = dict(kept)
    for i, w in enumerate(words[:UNREACHABLE]):
        out[w] = len(kept) + i
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory, synthetic):
    """synthetic:chatglm:tiny with the defect-exposing tokenizer.model, converted to every format."""
    from glmkit.convert import to_gguf, to_hf, to_openvino

    root = tmp_path_factory.mktemp("tok")
    src = root / "src"
    shutil.copytree(synthetic("chatglm"), src)
    base = tokenizer.ranks_from_tokenizer_json(tokenizer.tiktoken_to_fast(src / "tokenizer.model"))
    ranks = defect_exposing_ranks(base)
    tokenizer.write_tiktoken(ranks, src / "tokenizer.model")
    return {"ranks": ranks, "hf": to_hf(str(src), root / "hf", quiet=True),
            "gguf": to_gguf(str(src), root / "m.gguf", outtype="f32", quiet=True),
            "ov": to_openvino(str(src), root / "ov", weight_format="fp16", quiet=True)}


@pytest.fixture(scope="module")
def reference(converted):
    """tiktoken itself: GLM-4's regex over the same ranks."""
    import tiktoken

    enc = tiktoken.Encoding("glm4-defects", pat_str=families.PRETOKENIZER_REGEX,
                            mergeable_ranks=converted["ranks"], special_tokens={})
    return [enc.encode_ordinary(t) for t in TOKENIZER_PROBES]


def test_the_vocabulary_really_exposes_the_defect(converted, reference):
    """Plain BPE over the same ranks (what ignores tiktoken's whole-token rule) splits the added words."""
    ranks = converted["ranks"]
    added = [w for w, r in ranks.items() if r >= len(ranks) - UNREACHABLE]
    assert all(_bpe_parts(ranks, w) > 1 for w in added)
    assert sum(ranks[w] in ids for w in added for ids in reference) >= UNREACHABLE  # tiktoken uses them whole


def test_hf_tokenizer_is_identical_to_tiktoken(converted, reference):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(converted["hf"] / "tokenizer.json"))
    assert [e.ids for e in tok.encode_batch(list(TOKENIZER_PROBES), add_special_tokens=False)] == reference


def test_llama_cpp_on_the_gguf_is_identical_to_tiktoken(converted, reference):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(converted["gguf"]), vocab_only=True, verbose=False)
    try:
        got = [llm.tokenize(t.encode(), add_bos=False, special=False) for t in TOKENIZER_PROBES]
    finally:
        llm.close()
    assert got == reference


def test_the_openvino_runtime_tokenizes_like_tiktoken(converted, reference):
    from glmkit.runtimes import load

    rt = load(str(converted["ov"]))
    assert [rt.tokenizer.encode(t) for t in TOKENIZER_PROBES] == reference


def test_conversions_record_their_tokenizer_agreement(converted):
    from glmkit.common import manifest

    ov = manifest.read(converted["ov"])["verification"]
    assert ov["tokenizer"]["identical"] == ov["tokenizer"]["texts"] == len(TOKENIZER_PROBES)
    # openvino-tokenizers' BPE ignores ignore_merges: its agreement is measured and recorded, not gated
    assert 0 <= ov["ir_tokenizer"]["identical"] <= ov["ir_tokenizer"]["texts"] and not ov["ir_tokenizer"]["gated"]
    assert manifest.read(converted["gguf"])["verification"]["tokenizer"]["passed"]
    assert manifest.read(converted["hf"])["verification"]["tokenizer"]["passed"]


def test_a_gguf_that_ignores_the_whole_token_rule_is_rejected(converted, tmp_path, monkeypatch):
    """The pre-tokenizer type llama.cpp's own converter writes for glm-4-9b-chat (chatglm-bpe) splits the added
    words: verification catches it (exit 3) instead of shipping a file that tokenizes differently."""
    from glmkit.convert import gguf_file, to_gguf
    from glmkit.glm4.errors import VerificationError

    monkeypatch.setitem(gguf_file.PRE_TYPES, True, "chatglm-bpe")
    src = converted["hf"].parent / "src"
    with pytest.raises(VerificationError, match="probe texts encode as the source's"):
        to_gguf(str(src), tmp_path / "bad.gguf", outtype="f32", quiet=True)
    rejected = json.loads((tmp_path / "bad.gguf.rejected.glmkit.json").read_text())["verification"]["tokenizer"]
    assert rejected["identical"] < rejected["texts"] and rejected["first_difference"]


def test_plain_text_starts_with_gmask_sop_and_chat_is_not_doubled(converted):
    from glmkit.sources.tokenizer import load_hf_tokenizer

    tok = load_hf_tokenizer(converted["hf"])
    g, s = tok.convert_tokens_to_ids("[gMASK]"), tok.convert_tokens_to_ids("<sop>")
    assert tok("hello")["input_ids"][:2] == [g, s]
    assert tok("hello", add_special_tokens=False)["input_ids"][0] != g
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True)
    ids = chat["input_ids"] if isinstance(chat, dict) else chat
    assert ids[:2] == [g, s] and ids.count(g) == 1


def test_sharded_checkpoint_with_fp32_norms_and_bf16_weights_converts_exactly(synthetic, tmp_path):
    """safetensors writes a header sorted by dtype, then name; the GGUF writer must put each tensor's bytes where
    it planned them, whatever the order."""
    import numpy as np
    import torch
    from safetensors import safe_open

    from glmkit.convert import to_gguf
    from glmkit.runtimes import logits
    from glmkit.sources import shards

    src = synthetic("glm4")
    out = tmp_path / "mixed"
    out.mkdir()
    writer = shards.ShardWriter(out, max_shard_bytes=200_000)
    with safe_open(str(src / "model.safetensors"), framework="pt") as f:
        for name in f.keys():
            t = f.get_tensor(name)
            writer.add(name, t if "norm" in name else t.to(torch.bfloat16))
    writer.close()
    for p in src.iterdir():
        if not p.name.endswith(".safetensors") and p.is_file() and p.name != "glmkit.json":
            shutil.copy2(p, out / p.name)
    cfg = json.loads((out / "config.json").read_text())
    cfg["torch_dtype"] = "bfloat16"
    (out / "config.json").write_text(json.dumps(cfg))
    assert len(list(out.glob("model-*.safetensors"))) > 2
    gguf_path = to_gguf(str(out), tmp_path / "mixed.gguf", outtype="f32", quiet=True)
    ids = list(range(10, 200, 3))
    ref, got = logits(str(out), ids, backend="transformers"), logits(gguf_path, ids)
    assert np.abs(ref - got).max() < 1e-3
