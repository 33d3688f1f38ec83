"""GLM-4V-9B's facts: how an image enters the prompt, which positions its embeddings take, how pixels are prepared.

Each was checked against independent code (docs/glm4v.md): the original modeling and tokenization code as
vLLM and chatglm.cpp reimplement it. The prompt holds `<|begin_of_image|><|endoftext|><|end_of_image|>` before the
turn's text; the language model sees, in place of those 3 tokens, the vision tower's boi vector, one embedding per
patch of the 2×2-merged grid (1,600 at 1120 px) and its eoi vector. Positions are the original's, not sequential:
every patch shares one position, so the text after the image continues as if the image were 3 tokens long.
"""

from __future__ import annotations

from glmkit.glm4.errors import GlmkitError

BOI_TOKEN, EOI_TOKEN = "<|begin_of_image|>", "<|end_of_image|>"
IMAGE_PLACEHOLDER = "<|endoftext|>"  # the token between the markers; its embedding is never used
IMAGE_MARKER = BOI_TOKEN + IMAGE_PLACEHOLDER + EOI_TOKEN
MARKER_TOKENS = 3
IMAGES_PER_CONVERSATION = 1  # the original tokenizer asserts on a second image
# The architecture a GLM-4V directory for vLLM names in its config.json: glmkit's model (serve/vllm_glm4v.py),
# which gives image embeddings the original's positions. Its rope_parameters declare vLLM's M-RoPE channels,
# vLLM's only way to hand a model positions other than token indices; the language model reads one channel.
VLLM_ARCHITECTURE = "GlmkitGLM4VForCausalLM"

# Pixel preprocessing of the original processor: RGB, bicubic resize to a square (aspect ratio not kept), [0, 1],
# then CLIP's normalisation.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
DOWNSAMPLE = 2  # the 2×2 stride-2 conv after the transformer merges 4 patches into one language-model embedding

# glm-4-9b-chat's turn format (tools from a message's `tools` field; `<|{role}|>{metadata}\n`), with the image
# marker between a turn's header and its text: the original tokenizer's Python template, which the checkpoint's
# tokenizer_config.json does not carry as Jinja. A turn is either glmkit's (text content, `image` marking the
# turn's picture) or OpenAI content parts as vLLM hands them over (text parts joined, an image part marks it);
# tools given as the `tools` argument, as vLLM gives them, go to the first message, where glm-serve puts them.
GLM4V_CHAT_TEMPLATE = (
    "{% if tools %}{% set messages = [dict(messages[0], tools=tools)] + messages[1:] if messages else "
    "[{'role': 'system', 'content': '', 'tools': tools}] %}{% endif %}"
    "[gMASK]<sop>{% for item in messages %}"
    "{% if item['content'] is string or item['content'] is none %}"
    "{% set text, image = item['content'] or '', item['image'] %}{% else %}"
    "{% set ns = namespace(text='', image=false) %}{% for part in item['content'] %}"
    "{% if part['type'] == 'text' %}{% set ns.text = ns.text + part['text'] %}"
    "{% elif part['type'] in ('image', 'image_url') %}{% set ns.image = true %}{% endif %}{% endfor %}"
    "{% set text, image = ns.text, ns.image %}{% endif %}"
    "{% if item['tools'] is defined %}<|system|>\n"
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。"
    "\n\n# 可用工具{% for tool in item['tools'] %}{% if tool['type'] == 'function' %}\n\n"
    "## {{ tool['function']['name'] }}\n\n{{ tool['function'] | tojson(indent=4) }}\n"
    "在调用上述函数时，请使用 Json 格式表示调用的参数。{% endif %}{% endfor %}{% endif %}"
    "{% if text or image %}<|{{ item['role'] }}|>{{ item['metadata'] }}\n"
    "{% if image %}" + IMAGE_MARKER + "{% endif %}{{ text }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def vllm_config(config: dict) -> dict:
    """A GLM-4V config.json as vLLM reads it for glmkit's model: no remote code (vLLM has its own ChatGLMConfig),
    glmkit's architecture, and M-RoPE channels declared (rope_parameters; all rotary pairs in the first channel,
    the one the model reads)."""
    out = {k: v for k, v in config.items() if k != "auto_map"}
    head_dim = config.get("kv_channels") or config["hidden_size"] // config["num_attention_heads"]
    out.update(architectures=[VLLM_ARCHITECTURE],
               rope_parameters={"rope_type": "default", "mrope_section": [head_dim // 4, 0, 0]})
    return out


def image_tokens(image_size: int, patch_size: int) -> int:
    """Language-model embeddings of one image: the merged patch grid plus the boi and eoi vectors (1,602)."""
    side = image_size // patch_size // DOWNSAMPLE
    return side * side + 2


def positions(ids: list[int], boi_id: int, image_size: int, patch_size: int) -> list[int]:
    """Position ids of the expanded sequence the language model sees for prompt `ids` (the image's 3 marker tokens
    replaced by its embeddings): as the original, 0 … boi's index for the text before and the boi vector, boi+1 for
    every patch, boi+2 for the eoi vector, and the text after continues from there. The next token after the
    prompt takes position len(ids): decoding continues from the unexpanded length."""
    if ids.count(boi_id) != 1:
        raise GlmkitError(f"a GLM-4V prompt holds one image; this one has {ids.count(boi_id)} image markers")
    return image_positions(ids.index(boi_id), len(ids), image_tokens(image_size, patch_size))


def image_positions(boi: int, length: int, embeddings: int) -> list[int]:
    """positions() from where the image starts (`boi`, its index in the prompt), the prompt's length in tokens
    (the image counted as its 3 markers) and the image's embeddings (boi and eoi vectors included)."""
    return list(range(boi + 1)) + [boi + 1] * (embeddings - 2) + list(range(boi + 2, length))


def preprocess(image, image_size: int):
    """[1, 3, S, S] float32 pixel values from a PIL image, as the original processor computes them."""
    import numpy as np
    from PIL import Image

    rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
    x: np.ndarray = np.asarray(rgb, dtype=np.float32) / 255.0
    x = (x - np.asarray(MEAN, dtype=np.float32)) / np.asarray(STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
