"""One tokenizer face for every backend: encode, incremental decode, the GLM-4 chat template and the stop ids.

Prompts are rendered by glmkit.glm4.template (jinja2 set up as transformers sets it up) for every backend, so the same
messages give the same text — and so the same token ids — on transformers, OpenVINO and llama.cpp. A checkpoint's
tokenizer.json runs through HF `tokenizers` itself: no transformers in the runtime install. Streaming decodes with the
tokenizer's own incremental decoder (tokenizers' DecodeStream, llama.cpp's token pieces): O(1) per token.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from pathlib import Path

from glmkit.glm4 import families
from glmkit.glm4 import template as templates
from glmkit.glm4.errors import GlmkitError
from glmkit.glm4.messages import find_template


class Tokenizer:
    def __init__(self, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str], template: str | None,
                 token_id: Callable[[str], int | None], decoder: Callable[[], object],
                 template_context: dict | None = None, vocab_size: int = 0):
        self.encode = encode
        self.vocab_size = vocab_size  # ids from 0 to vocab_size - 1 decode
        self.decode = decode
        self.decoder = decoder  # () -> an object with step(id) -> str and flush() -> str
        self.chat_template = template
        self.template_context = template_context or {}  # special tokens, as apply_chat_template passes them
        ids = {t: token_id(t) for t in families.SPECIAL_TOKENS}
        self.special_ids = {t: i for t, i in ids.items() if i is not None}
        self.stop_ids = families.stop_token_ids(self.special_ids)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True, tools: list[dict] | None = None,
                    **kwargs) -> str:
        if self.chat_template is None:
            raise GlmkitError("this model has no chat template; send raw text or token ids")
        return templates.render(self.chat_template, messages, tools, add_generation_prompt,
                                **{**self.template_context, **kwargs})


class _DecodeStream:
    """tokenizers' DecodeStream: text of each new token, given the ones before (handles split UTF-8)."""

    def __init__(self, backend):
        from tokenizers.decoders import DecodeStream

        self.backend = backend
        self.stream = DecodeStream(skip_special_tokens=False)

    def step(self, token: int) -> str:
        return self.stream.step(self.backend, token) or ""

    def flush(self) -> str:
        return ""


class _PieceStream:
    """A token's bytes from the engine, through an incremental UTF-8 decoder: never half a character."""

    def __init__(self, piece: Callable[[int], bytes]):
        self.piece = piece
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def step(self, token: int) -> str:
        return self.utf8.decode(self.piece(token))

    def flush(self) -> str:
        return self.utf8.decode(b"", final=True)


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict."""
    return value.get("content") if isinstance(value, dict) else value


def from_hf(path) -> Tokenizer:
    """A checkpoint's (or an IR's) tokenizer.json through HF tokenizers, as transformers' fast tokenizer runs it."""
    import json

    from tokenizers import Tokenizer as HFTokenizer

    path = Path(path)
    try:
        tok = HFTokenizer.from_file(str(path / "tokenizer.json"))
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    except Exception as e:  # tokenizers raises its own Exception type for a corrupt file
        raise GlmkitError(f"{path}: cannot read the tokenizer ({str(e).splitlines()[0] if str(e) else e}); "
                          "re-convert the model with glm-convert") from None
    context: dict = {k: _token_text(v) for k, v in config.items() if k.endswith("_token") and _token_text(v)}
    context["additional_special_tokens"] = [_token_text(t) for t in config.get("additional_special_tokens", [])]
    return Tokenizer(lambda s: tok.encode(s, add_special_tokens=False).ids,
                     lambda ids: tok.decode(ids, skip_special_tokens=False), find_template(path, config),
                     tok.token_to_id, lambda: _DecodeStream(tok), context,
                     vocab_size=tok.get_vocab_size(with_added_tokens=True))


def from_llama(llm) -> Tokenizer:
    """llama.cpp's own tokenizer and the template embedded in the GGUF."""
    template = find_template(gguf_template=llm.metadata.get("tokenizer.chat_template") or None)

    def encode(s: str) -> list[int]:
        return llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)

    def token_id(t: str):
        ids = encode(t)
        return ids[0] if len(ids) == 1 else None

    return Tokenizer(encode, lambda ids: llm.detokenize(ids, special=True).decode("utf-8", errors="replace"),
                     template, token_id, lambda: _PieceStream(lambda t: llm.detokenize([t], special=True)),
                     vocab_size=llm.n_vocab())
