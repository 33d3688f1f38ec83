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

# Pixel preprocessing of the original processor: RGB, bicubic resize to a square (aspect ratio not kept), [0, 1],
# then CLIP's normalisation.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
DOWNSAMPLE = 2  # the 2×2 stride-2 conv after the transformer merges 4 patches into one language-model embedding

# glm-4-9b-chat's turn format (tools from a message's `tools` field; `<|{role}|>{metadata}\n`), with the image
# marker between a turn's header and its text: the original tokenizer's Python template, which the checkpoint's
# tokenizer_config.json does not carry as Jinja.
GLM4V_CHAT_TEMPLATE = (
    "[gMASK]<sop>{% for item in messages %}{% if item['tools'] is defined %}<|system|>\n"
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。"
    "\n\n# 可用工具{% for tool in item['tools'] %}{% if tool['type'] == 'function' %}\n\n"
    "## {{ tool['function']['name'] }}\n\n{{ tool['function'] | tojson(indent=4) }}\n"
    "在调用上述函数时，请使用 Json 格式表示调用的参数。{% endif %}{% endfor %}{% endif %}"
    "{% if item['content'] or item['image'] %}<|{{ item['role'] }}|>{{ item['metadata'] }}\n"
    "{% if item['image'] %}" + IMAGE_MARKER + "{% endif %}{{ item['content'] }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


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
    b = ids.index(boi_id)
    patches = image_tokens(image_size, patch_size) - 2
    return list(range(b + 1)) + [b + 1] * patches + list(range(b + 2, len(ids)))


def preprocess(image, image_size: int):
    """[1, 3, S, S] float32 pixel values from a PIL image, as the original processor computes them."""
    import numpy as np
    from PIL import Image

    rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
    x: np.ndarray = np.asarray(rgb, dtype=np.float32) / 255.0
    x = (x - np.asarray(MEAN, dtype=np.float32)) / np.asarray(STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
