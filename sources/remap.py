"""A source as a transformers-native checkpoint: glm4/glm as they are, the original chatglm format remapped.

The remap is native — config fields renamed, fused query_key_value split into q/k/v, the tiktoken tokenizer turned
into a tokenizer.json — so no remote code is executed, now or when the result is loaded. `--to hf` (hf.py) writes
it as an artifact; source.transformers_dir caches it for everything else that runs a chatglm source.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from glmkit.common import progress
from glmkit.glm4 import families, vision
from glmkit.glm4.errors import GlmkitError
from glmkit.glm4.messages import find_template

from .checkpoint import Checkpoint
from .layout import expected_tensors

TOKENIZER_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
# ChatGLM options the glm layout cannot express; a checkpoint using them is refused rather than mis-converted.
CHATGLM_REQUIRED = {"rmsnorm": True, "apply_residual_connection_post_layernorm": False, "add_bias_linear": False,
                    "post_layer_norm": True, "original_rope": True}


VISION_PREFIX = "transformer.vision."


def chatglm_to_glm_config(c: dict) -> dict:
    """GlmConfig dict for a ChatGLM config (field names as transformers' convert_glm_weights_to_hf.py maps them)."""
    from transformers import GlmConfig

    for key, want in CHATGLM_REQUIRED.items():
        if key in c and bool(c[key]) != want:
            raise GlmkitError(f"config.json: {key}={c[key]} has no equivalent in the glm layout; this checkpoint "
                              "is not a GLM-4 one glmkit can remap")
    out = {g: c[k] for k, g in families.CHATGLM_TO_GLM_CONFIG.items() if k in c}
    out["num_hidden_layers"] = c.get("num_layers", c.get("num_hidden_layers"))
    heads = c["num_attention_heads"]
    out["num_key_value_heads"] = c["multi_query_group_num"] if c.get("multi_query_attention") else heads
    out.setdefault("head_dim", c["hidden_size"] // heads)
    out.update(partial_rotary_factor=families.PARTIAL_ROTARY_FACTOR, hidden_act="silu", tie_word_embeddings=False,
               rope_theta=families.CHATGLM_ROPE_BASE * float(c.get("rope_ratio", 1)),
               eos_token_id=c.get("eos_token_id"), pad_token_id=c.get("pad_token_id"))
    cfg = GlmConfig(**{k: v for k, v in out.items() if v is not None})
    cfg.architectures = ["GlmForCausalLM"]
    return cfg.to_dict()


def chatglm_to_glm_tensors(tensors: Iterator, glm_config: dict) -> Iterator:
    """Rename ChatGLM tensors to the glm layout and split each fused query_key_value into q, k and v."""
    d = glm_config["head_dim"]
    q, kv = glm_config["num_attention_heads"] * d, glm_config["num_key_value_heads"] * d
    for name, t in tensors:
        if name.endswith(families.CHATGLM_DROPPED):
            continue
        if families.CHATGLM_QKV in name:
            prefix, kind = name.split(families.CHATGLM_QKV)
            for a, b in families.CHATGLM_TO_GLM_WEIGHTS:
                prefix = (prefix + ".").replace(a, b)[:-1]
            if t.shape[0] != q + 2 * kv:
                raise GlmkitError(f"{name}: {t.shape[0]} rows, but the config implies {q} + 2×{kv}; "
                                  "config.json does not match the weights")
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), t.split([q, kv, kv], dim=0)):
                yield f"{prefix}.self_attn.{proj}.{kind}", part
            continue
        for a, b in families.CHATGLM_TO_GLM_WEIGHTS:
            name = name.replace(a, b)
        yield name, t


def glm_config_and_tensors(ckpt: Checkpoint) -> tuple[dict, Iterator]:
    """The checkpoint's config and (name, tensor) stream in the glm/glm4 layout transformers loads."""
    if not ckpt.family.native:
        config = chatglm_to_glm_config(ckpt.config)
        # GLM-4V: the language part (its vision tower goes through vision_tower.py)
        tensors = ckpt.tensors(keep=lambda n: not n.startswith(VISION_PREFIX)) if ckpt.family.vision else \
            ckpt.tensors()
        return config, chatglm_to_glm_tensors(tensors, config)
    return dict(ckpt.config), ckpt.tensors()


def check_tensors(written: dict[str, tuple], config: dict) -> None:
    """The output must hold exactly the tensors transformers' model of this config expects, shapes included."""
    expected = expected_tensors(config)
    if config.get("tie_word_embeddings") and "lm_head.weight" not in written:
        expected.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(written))
    extra = sorted(set(written) - set(expected))
    wrong = sorted(n for n in set(expected) & set(written) if tuple(expected[n]) != tuple(written[n]))
    if missing or extra or wrong:
        detail = "; ".join(f"{what}: {', '.join(names[:3])}{' …' if len(names) > 3 else ''}"
                           for what, names in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
                           if names)
        raise GlmkitError(f"weights do not match config.json ({detail}); the checkpoint is incomplete or corrupt")


def write_tokenizer(ckpt: Checkpoint, out: Path) -> None:
    from . import tokenizer

    tok_cfg_path = ckpt.path / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path.is_file() else {}
    template = find_template(ckpt.path, tok_cfg, default=False)
    if not ckpt.family.native:  # the original tiktoken file, read without remote code
        fast = tokenizer.tiktoken_to_fast(ckpt.path / ckpt.family.tokenizer_file)
        fmt = families.chat_format(ckpt.config, str(ckpt.path), template)
        hf = tokenizer.hf_tokenizer(fast, fmt)
        if template:
            hf.chat_template = template
        hf.save_pretrained(out)
        return
    for name in TOKENIZER_SIDE_FILES:
        if (ckpt.path / name).is_file():
            shutil.copy2(ckpt.path / name, out / name)
    if not template:  # a checkpoint without a template would chat without [gMASK]<sop>
        tok_cfg["chat_template"] = families.chat_format(ckpt.config, str(ckpt.path)).template
        (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n")


def write_generation_config(ckpt: Checkpoint, out: Path) -> None:
    src = ckpt.path / "generation_config.json"
    if src.is_file() and ckpt.family.native:
        shutil.copy2(src, out / "generation_config.json")
        return
    from .tokenizer import added_token_ids

    ids = added_token_ids(out / "tokenizer.json")
    fmt = families.chat_format(ckpt.config, str(ckpt.path))
    (out / "generation_config.json").write_text(json.dumps(families.generation_config(ids, fmt), indent=2) + "\n")


def write_checkpoint(ckpt: Checkpoint, out: Path, quiet: bool = False, max_shard_bytes: int | None = None) -> dict:
    """Write `ckpt` into the (empty) directory `out` as a transformers-native checkpoint; returns its config."""
    config, tensors = glm_config_and_tensors(ckpt)
    _write(ckpt, out, config, tensors, quiet, max_shard_bytes, check=True)
    return config


def write_glm4v(ckpt: Checkpoint, out: Path, quiet: bool = False, max_shard_bytes: int | None = None) -> dict:
    """GLM-4V for vLLM: transformers has no GLM-4V-9B class, so the tensors keep the original layout vLLM reads,
    under a config.json that names glmkit's model (vision.vllm_config) and a tokenizer that needs no remote code;
    returns the config."""
    config = vision.vllm_config(ckpt.config)
    _write(ckpt, out, config, ckpt.tensors(), quiet, max_shard_bytes, check=False)
    return config


def _write(ckpt: Checkpoint, out: Path, config: dict, tensors: Iterator, quiet: bool, max_shard_bytes: int | None,
           check: bool) -> None:
    from . import shards

    writer = shards.ShardWriter(out, **({"max_shard_bytes": max_shard_bytes} if max_shard_bytes else {}))
    written: dict[str, tuple] = {}
    total = sum(f.stat().st_size for f in ckpt.weight_files)
    with progress.task(f"{ckpt.family.name} → hf", total=total, quiet=quiet) as advance:
        for name, t in tensors:
            written[name] = tuple(t.shape)
            writer.add(name, t)
            advance(t.numel() * t.element_size())
    if check:
        check_tensors(written, config)
    writer.close()
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_tokenizer(ckpt, out)
    write_generation_config(ckpt, out)


def yarn_view(source_dir: Path, dest: Path, spec: str) -> Path:
    """`source_dir` with `--rope-scaling` applied to its config (families.with_yarn), at `dest`: the other files
    are links, so a 9B checkpoint costs nothing to view this way."""
    cfg = families.with_yarn(json.loads((Path(source_dir) / "config.json").read_text()), spec)
    dest.mkdir(parents=True, exist_ok=True)
    for f in Path(source_dir).iterdir():
        if f.name != "config.json":
            os.symlink(f.resolve(), dest / f.name)
    (dest / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return dest

