import json

import pytest
import torch
from conftest import TEXT, glm_convert, logits

from glmkit.common import manifest
from glmkit.convert import to_hf


def _ids(path, text=TEXT):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)


def test_chatglm_to_hf_gives_the_logits_of_the_glm_model_it_was_fused_from(synthetic, tmp_path):
    """The chatglm fixture is the glm fixture with q/k/v and config fields in the original layout."""
    out = to_hf("synthetic:chatglm:tiny", tmp_path / "out", quiet=True)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["GlmForCausalLM"] and "auto_map" not in cfg
    assert not list(out.glob("*.py"))  # nothing that trust_remote_code could run
    ids = _ids(out)
    assert ids == _ids(synthetic("glm"))
    got, ref = logits(out, ids), logits(synthetic("glm"), ids)
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    assert (got - ref).abs().max().item() < 1e-5
    assert cfg["rope_theta"] == 5e6 and cfg["rms_norm_eps"] == 1.5625e-07 and cfg["max_position_embeddings"] == 131072


def test_chatglm_remap_is_not_vacuous(synthetic, tmp_path, monkeypatch):
    """Dropping rope_ratio (a classic silent infidelity) must change the logits the parity test compares."""
    from glmkit.glm4 import families

    monkeypatch.setattr(families, "CHATGLM_ROPE_BASE", 10000.0 / 500)
    out = to_hf("synthetic:chatglm:tiny", tmp_path / "bad", quiet=True)
    ids = _ids(out)
    assert (logits(out, ids) - logits(synthetic("glm"), ids)).abs().max().item() > 1e-3


@pytest.mark.parametrize("family", ["glm4", "glm"])
def test_native_formats_keep_their_logits_and_stop_tokens(synthetic, tmp_path, family):
    out = to_hf(f"synthetic:{family}:tiny", tmp_path / "out", quiet=True)
    ids = _ids(out)
    assert ids[:2] == _ids(synthetic(family))[:2]
    assert torch.equal(logits(out, ids), logits(synthetic(family), ids))
    gen = json.loads((out / "generation_config.json").read_text())
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert gen["eos_token_id"] == tok.convert_tokens_to_ids(["<|endoftext|>", "<|user|>", "<|observation|>"])
    m = manifest.read(out)
    assert m["family"] == family and m["source"]["spec"] == f"synthetic:{family}:tiny" and "transformers" in m["tools"]


def test_sharded_output_has_an_index_and_loads(synthetic, tmp_path):
    out = to_hf("synthetic:glm4:tiny", tmp_path / "out", quiet=True, max_shard_bytes=300_000)
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 2
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    ids = _ids(out)
    assert torch.equal(logits(out, ids), logits(synthetic("glm4"), ids))


def test_cli_converts_and_prints_the_output(tmp_path):
    r = glm_convert("synthetic:chatglm:tiny", "--to", "hf", "-o", tmp_path / "x", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "x") and (tmp_path / "x" / "model.safetensors").is_file()
