"""The GLM-4 family registry: every GLM-4 fact glmkit relies on lives here.

Converters and runtimes read this module; nothing else hard-codes special tokens, stop tokens, chat formats,
rope layout or config field names. Facts are declarative tables (in the manner of gguf-py's constants) plus pure
lookups over them; nothing here reads a file (checkpoint.py reads config.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePath

from . import vision
from .errors import GlmkitError

# Special tokens in the order of the real tokenizer, with their ids there (151329 = 151552 - 223).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
    "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
)
REAL_VOCAB_SIZE = 151552
REAL_SPECIAL_BASE = 151329
REAL_SPECIAL_IDS: dict[str, int] = {t: REAL_SPECIAL_BASE + i for i, t in enumerate(SPECIAL_TOKENS)}

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|endoftext|>"
USER_TOKEN, OBSERVATION_TOKEN = "<|user|>", "<|observation|>"
# Generation ends on any of these: end of text, the next user turn, or a tool observation.
STOP_TOKENS: tuple[str, ...] = (EOS_TOKEN, USER_TOKEN, OBSERVATION_TOKEN)
PROMPT_PREFIX = "[gMASK]<sop>"

# GLM-4's cl100k-style pre-tokenizer regex (llama.cpp's `glm4` / `chatglm-bpe` pre-tokenizer types).
PRETOKENIZER_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

# Chat formats, laid out as GLM-4-0414's own template lays them out (docs/glm4-format.md, "Tools"):
# `[gMASK]<sop>` opens every prompt — a converter that drops it yields a model that talks garbage; OpenAI-style
# tools become a system block (`# 可用工具`, each function as indented JSON); a tool call in history is an assistant
# turn whose `metadata` is the function name; results are observations. The generation prompt is `<|assistant|>`
# with no newline: the model writes "\n" before an answer, or `name\n{json}` to call a tool.
# No whitespace control (`{%-`) anywhere: it would eat the "\n" after each role token.
TOOLS_HEADER = "# 可用工具"
TOOL_FOOTER = "在调用上述函数时，请使用 Json 格式表示调用的参数。"
_TOOLS_BLOCK = (
    "{% if tools %}<|system|>\n" + TOOLS_HEADER + "{% for tool in tools %}"
    "{{ '\\n\\n' if loop.first else '\\n' }}"
    "## {{ (tool['function'] if tool['function'] is defined else tool)['name'] }}"
    "{{ '\\n\\n' }}"
    "{{ (tool['function'] if tool['function'] is defined else tool) | tojson(indent=4, ensure_ascii=False) }}"
    "{{ '\\n' }}" + TOOL_FOOTER + "{% endfor %}{% endif %}"
)
_ROLE_TURNS = (
    "{% if m['role'] == 'system' %}<|system|>\n{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<|user|>\n{{ m['content'] }}"
    "{% elif m['role'] == 'observation' or m['role'] == 'tool' %}<|observation|>\n{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' and m['metadata'] %}<|assistant|>{{ m['metadata'] }}\n{{ m['content'] }}"
)
GLM4_CHAT_TEMPLATE = (
    "[gMASK]<sop>" + _TOOLS_BLOCK + "{% for m in messages %}" + _ROLE_TURNS
    + "{% elif m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'] }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Z1 (reasoning) models: past answers lose their <think>…</think> part, and the new answer is forced to start
# with "<think>\n", as the model card's template does.
Z1_CHAT_TEMPLATE = (
    "[gMASK]<sop>" + _TOOLS_BLOCK + "{% for m in messages %}" + _ROLE_TURNS
    + "{% elif m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'].split('</think>')[-1].strip() }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n<think>\n{% endif %}"
)


@dataclass(frozen=True)
class ChatFormat:
    name: str
    template: str
    thinks: bool  # answers start with <think>…</think>
    sampling: dict = field(default_factory=dict)  # model-card defaults
    tool_syntax: str = "glm4"  # how its tool calls are written (toolcalls.SYNTAXES)
    images: bool = False  # a user turn may carry an image, written as its marker tokens (glm4/vision.py)


CHAT_FORMATS: dict[str, ChatFormat] = {
    "glm4": ChatFormat("glm4", GLM4_CHAT_TEMPLATE, thinks=False),
    "z1": ChatFormat("z1", Z1_CHAT_TEMPLATE, thinks=True, sampling={"temperature": 0.6, "top_p": 0.95, "top_k": 40}),
    "glm4v": ChatFormat("glm4v", vision.GLM4V_CHAT_TEMPLATE, thinks=False, images=True),
}


@dataclass(frozen=True)
class Family:
    name: str
    architectures: tuple[str, ...]
    model_type: str
    checkpoints: tuple[str, ...]        # published checkpoints of this layout (glm-convert --help lists them)
    context_field: str                  # config field holding the context length
    native_context: int | None = None   # trained context, where the family fixes one
    yarn_factor: float | None = None    # recommended YaRN factor for long context
    remap_to: str | None = None         # not transformers-native: the family its weights are remapped into
    tokenizer_file: str = "tokenizer.json"  # the tokenizer the checkpoint ships
    vision: bool = False                # GLM-4V: a vision tower beside the language model (glm4/vision.py)

    @property
    def native(self) -> bool:
        """transformers (and every engine that reads its layout) loads it without remote code."""
        return self.remap_to is None

    @property
    def output_family(self) -> str:
        """The family a conversion writes: the remapped one for a format transformers cannot load."""
        return self.remap_to or self.name

    def context_length(self, config: dict) -> int:
        return int(config.get(self.context_field) or self.native_context or 0)

    def yarn_guidance(self, config: dict) -> str:
        if not self.yarn_factor:
            return "no YaRN recipe is published for this family; its context length is fixed by the checkpoint"
        base = self.context_length(config)
        return (f"native context {base}; for up to {int(base * self.yarn_factor)} tokens add "
                f"rope_scaling={json.dumps(rope_scaling_yarn(self.yarn_factor, base))} to config.json")


FAMILIES: dict[str, Family] = {
    # 4 norms per layer (post_self_attn_layernorm, post_mlp_layernorm).
    "glm4": Family(
        name="glm4", architectures=("Glm4ForCausalLM",), model_type="glm4",
        checkpoints=("THUDM/GLM-4-9B-0414", "THUDM/GLM-Z1-9B-0414", "THUDM/GLM-4-32B-0414",
                     "THUDM/GLM-Z1-32B-0414", "THUDM/GLM-Z1-Rumination-32B-0414"),
        context_field="max_position_embeddings", native_context=32768, yarn_factor=4.0,
    ),
    # Fused gate_up_proj.
    "glm": Family(
        name="glm", architectures=("GlmForCausalLM",), model_type="glm",
        checkpoints=("THUDM/glm-4-9b-chat-hf", "THUDM/glm-4-9b-chat-1m-hf", "THUDM/glm-edge-1.5b-chat",
                     "THUDM/glm-edge-4b-chat"),
        context_field="max_position_embeddings",
    ),
    # The original THUDM format: remote code + tiktoken tokenizer; fused query_key_value and dense_h_to_4h.
    # glm-convert --to hf (remap.py) turns it into the glm layout.
    "chatglm": Family(
        name="chatglm", architectures=("ChatGLMModel", "ChatGLMForConditionalGeneration"), model_type="chatglm",
        checkpoints=("THUDM/glm-4-9b", "THUDM/glm-4-9b-chat", "THUDM/glm-4-9b-chat-1m"),
        context_field="seq_length", remap_to="glm", tokenizer_file="tokenizer.model",
    ),
    # GLM-4V-9B: the chatglm layout plus `vision_config` and `transformer.vision.*` (docs/glm4v.md).
    # Its language part remaps into the glm layout as chatglm's does.
    "glm4v": Family(
        name="glm4v", architectures=("ChatGLMModel",), model_type="chatglm", checkpoints=("THUDM/glm-4v-9b",),
        context_field="seq_length", remap_to="glm", tokenizer_file="tokenizer.model", vision=True,
    ),
}

# ChatGLM config field → GlmConfig field (the layout transformers' convert_glm_weights_to_hf.py documents).
CHATGLM_TO_GLM_CONFIG: dict[str, str] = {
    "padded_vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "ffn_hidden_size": "intermediate_size",
    "num_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "multi_query_group_num": "num_key_value_heads",
    "kv_channels": "head_dim",
    "seq_length": "max_position_embeddings",
    "layernorm_epsilon": "rms_norm_eps",
    "add_qkv_bias": "attention_bias",
    "torch_dtype": "torch_dtype",
}

# ChatGLM weight name pieces → Glm weight name pieces, applied in order. Fused q/k/v is split separately.
CHATGLM_TO_GLM_WEIGHTS: tuple[tuple[str, str], ...] = (
    ("transformer.output_layer.", "lm_head."),
    ("transformer.embedding.word_embeddings.", "model.embed_tokens."),
    ("transformer.encoder.final_layernorm.", "model.norm."),
    ("transformer.encoder.layers.", "model.layers."),
    (".self_attention.dense.", ".self_attn.o_proj."),
    (".mlp.dense_h_to_4h.", ".mlp.gate_up_proj."),
    (".mlp.dense_4h_to_h.", ".mlp.down_proj."),
)
CHATGLM_QKV = ".self_attention.query_key_value."
# Weights that are buffers in ChatGLM and recomputed by transformers.
CHATGLM_DROPPED = ("rotary_pos_emb.inv_freq",)

# Rope: GLM-4 rotates half of each head (partial_rotary_factor 0.5) in interleaved pairs, which is llama.cpp's
# rope type NORM; no Q/K permutation is needed in any converter.
PARTIAL_ROTARY_FACTOR = 0.5
CHATGLM_ROPE_BASE = 10000.0  # multiplied by the checkpoint's rope_ratio


def rope_scaling_yarn(factor: float, original_context: int) -> dict:
    return {"type": "yarn", "factor": float(factor), "original_max_position_embeddings": int(original_context)}


def yarn(config: dict) -> dict | None:
    """The config's YaRN rope_scaling, or None (transformers accepts "rope_type" or the older "type")."""
    scaling = config.get("rope_scaling") or {}
    return scaling if (scaling.get("rope_type") or scaling.get("type")) == "yarn" else None


def context_length(config: dict) -> int:
    """The context a config supports: with YaRN, the original context × factor (GLM-4-0414's card adds
    rope_scaling and leaves max_position_embeddings at the native 32,768), else max_position_embeddings."""
    native = int(config.get("max_position_embeddings") or config.get("seq_length") or 0)
    scaling = yarn(config)
    if scaling:
        original = int(scaling.get("original_max_position_embeddings") or native)
        return max(native, int(original * float(scaling["factor"])))
    return native


def with_yarn(config: dict, spec: str) -> dict:
    """`config` with `--rope-scaling yarn:FACTOR` applied: transformers' YaRN (factor, original context = the
    config's context) and max_position_embeddings = native × factor, so every reader sees the longer context."""
    kind, _, factor = spec.partition(":")
    try:
        f = float(factor)
    except ValueError:
        f = 0.0
    if kind != "yarn" or not f > 1.0 or f != f or f == float("inf"):
        raise GlmkitError(f"--rope-scaling {spec}: expected yarn:FACTOR with FACTOR > 1, e.g. yarn:4")
    if config.get("rope_scaling"):
        raise GlmkitError(f"--rope-scaling {spec}: the source already has rope_scaling "
                          f"{json.dumps(config['rope_scaling'])}; convert it without --rope-scaling")
    native = int(config["max_position_embeddings"])
    return {**config, "rope_scaling": rope_scaling_yarn(f, native), "max_position_embeddings": int(native * f)}


def supported() -> str:
    return ", ".join(f"{a} ({f.name})" for f in FAMILIES.values() for a in f.architectures)


def detect(config: dict, where: str = "config.json") -> Family:
    """Family of a checkpoint from its config dict; a GlmkitError listing what is supported otherwise."""
    archs = config.get("architectures") or []
    if config.get("vision_config") and config.get("model_type") == "chatglm":  # same class names as the text one
        return FAMILIES["glm4v"]
    for fam in FAMILIES.values():
        if any(a in fam.architectures for a in archs):
            return fam
    model_type = config.get("model_type")
    for fam in FAMILIES.values():
        if model_type == fam.model_type:
            return fam
    found = ", ".join(archs) or f"model_type {model_type!r}"
    raise GlmkitError(f"{where}: {found} is not a GLM-4 checkpoint; glmkit supports {supported()}")


def chat_format(config: dict | None = None, name_or_path: str = "", template: str | None = None) -> ChatFormat:
    """Z1 when the checkpoint says so — its template forces <think>, or it is published under a Z1 name (THUDM's
    GLM-Z1-* ids; a template need not mention <think>) — GLM-4V's for a vision checkpoint, else GLM-4 chat."""
    if (config or {}).get("vision_config") or (template and vision.IMAGE_MARKER in template):
        return CHAT_FORMATS["glm4v"]
    if template and "<think>" in template:
        return CHAT_FORMATS["z1"]
    if "z1" in PurePath(str(name_or_path)).name.lower() or (config or {}).get("glmkit_chat_format") == "z1":
        return CHAT_FORMATS["z1"]
    return CHAT_FORMATS["glm4"]


def special_token_ids(vocab: dict[str, int]) -> dict[str, int]:
    """Ids of the GLM-4 special tokens in a tokenizer's vocabulary (real checkpoints: REAL_SPECIAL_IDS)."""
    missing = [t for t in (EOS_TOKEN, "[gMASK]", "<sop>", "<|user|>", "<|assistant|>") if t not in vocab]
    if missing:
        raise GlmkitError(f"tokenizer lacks GLM-4 special tokens {missing}; it is not a GLM-4 tokenizer")
    return {t: vocab[t] for t in SPECIAL_TOKENS if t in vocab}


def stop_token_ids(vocab: dict[str, int]) -> list[int]:
    return [vocab[t] for t in STOP_TOKENS if t in vocab]


def generation_config(vocab: dict[str, int], fmt: ChatFormat) -> dict:
    """generation_config.json content: GLM-4 stops on end of text, a new user turn or an observation."""
    ids = stop_token_ids(vocab)
    cfg = {"eos_token_id": ids, "pad_token_id": vocab[PAD_TOKEN], "do_sample": bool(fmt.sampling)}
    cfg.update(fmt.sampling)
    return cfg
