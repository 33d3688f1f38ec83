import hashlib

import pytest

from glmkit.convert import GlmkitError
from glmkit.sources import checkpoint
from glmkit.sources import synthetic as synth


def _digest(path):
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / name).mkdir()
        synth.write("glm4", "tiny", tmp_path / name, seed=seed, quiet=True)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


@pytest.mark.parametrize("family", ["glm4", "glm", "chatglm"])
def test_parameter_count_matches_the_written_checkpoint(synthetic, family):
    ckpt = checkpoint.open_checkpoint(synthetic(family))
    vocab = ckpt.config.get("vocab_size") or ckpt.config["padded_vocab_size"]
    assert ckpt.num_parameters() == synth.num_parameters("tiny", vocab, family)


def test_shapes_keep_glm4_proportions():
    for name in ("bench", "glm-4-9b"):
        s = synth.SHAPES[name]
        assert s["num_key_value_heads"] == 2 and s["vocab_size"] == 151552
    bench = synth.SHAPES["bench"]
    assert all(bench[k] % 128 == 0 for k in ("hidden_size", "intermediate_size", "vocab_size"))
    assert 0.4e9 < synth.num_parameters("bench", 151552) < 0.6e9
    assert abs(synth.num_parameters("glm-4-9b", 151552) - 9.40e9) < 0.01e9


def test_sharding_bounds_memory_to_one_shard(tmp_path):
    synth.write("glm", "tiny", tmp_path, quiet=True, max_shard_bytes=1_000_000)
    files = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(files) >= 3
    assert all(f.stat().st_size < 1_000_000 + 600_000 for f in files)  # a shard overflows by at most one tensor
    checkpoint.open_checkpoint(tmp_path)


@pytest.mark.parametrize("spec", ["synthetic:glm4", "synthetic:glm4:huge", "synthetic:llama:tiny",
                                  "synthetic:glm4v:bench", "synthetic:glm4:glm-4v-9b"])
def test_bad_specs(spec):
    with pytest.raises(GlmkitError, match="synthetic:<family>:<shape>"):
        synth.parse(spec)


@pytest.fixture
def quick_tokenizer(monkeypatch):
    """glm4-tiny's tokenizer in place of the 151,329-token BPE fitted to the stdlib (minutes, once per cache), with
    the real vocabulary size: the weights' shapes are what these tests are about."""
    from glmkit.glm4 import families
    from glmkit.sources import embedded

    real = synth._tokenizer
    monkeypatch.setattr(synth, "_tokenizer", lambda shape, cache_dir, quiet: (
        real("tiny", cache_dir, quiet)[0], families.REAL_VOCAB_SIZE) if shape in synth.LAZY_SHAPES
        else real(shape, cache_dir, quiet))
    assert embedded.GLM4_TINY_VOCAB < families.REAL_VOCAB_SIZE


@pytest.mark.parametrize("shape", ["glm-4-32b", "glm-z1-32b"])
def test_glm4_32b_is_generated_when_read(synthetic, shape, quick_tokenizer):
    """GLM-4-32B-0414's shape (config.json of the published checkpoint) as a source that costs no disk: any rows
    of a tensor read alone equal the same rows of the whole tensor, and every tensor transformers' model of that
    config expects is there."""
    import torch

    from glmkit.glm4 import families
    from glmkit.sources.checkpoint import LazyCheckpoint

    path = synthetic("glm4", shape)
    assert sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) < 64 << 20  # tokenizer and config only
    ckpt = checkpoint.open_checkpoint(path)
    assert isinstance(ckpt, LazyCheckpoint)
    c = ckpt.config
    assert (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["num_key_value_heads"],
            c["head_dim"], c["intermediate_size"], c["vocab_size"]) == (6144, 61, 48, 2, 128, 23040, 151552)
    assert 32.5e9 < ckpt.num_parameters() == synth.num_parameters(shape, 151552) < 32.6e9
    w = ckpt.tensor("model.layers.60.self_attn.k_proj.weight")
    assert w.shape == (256, 6144) and w.dtype == torch.bfloat16
    assert torch.equal(ckpt.tensor("model.layers.60.self_attn.k_proj.weight", (100, 130)), w[100:130])
    rows = ckpt.tensor("model.embed_tokens.weight", (151000, 151010))
    assert rows.shape == (10, 6144) and torch.equal(rows, ckpt.tensor("model.embed_tokens.weight", (151000, 151010)))
    assert not torch.equal(rows[0], rows[1])
    assert families.chat_format(c, f"synthetic:glm4:{shape}").name == ("z1" if "z1" in shape else "glm4")


def test_32b_is_glm4_only():
    with pytest.raises(GlmkitError, match="comes in shapes"):
        synth.parse("synthetic:chatglm:glm-4-32b")


def test_tools_that_open_weight_files_refuse_a_generated_source(glmkit_cache, quick_tokenizer):
    from glmkit.convert.openvino import to_openvino
    from glmkit.sources.source import transformers_dir

    for attempt in (lambda: transformers_dir("synthetic:glm4:glm-4-32b"),
                    lambda: to_openvino("synthetic:glm4:glm-4-32b", "never-written", quiet=True)):
        with pytest.raises(GlmkitError, match="generated when read"):
            attempt()
