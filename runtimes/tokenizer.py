"""One tokenizer face for every backend: encode, incremental decode, the GLM-4 chat template and the stop ids.

Prompts are rendered by transformers' own Jinja renderer for every backend, so the same messages give the same
text — and so the same token ids — on transformers, OpenVINO and llama.cpp. Streaming decodes with the
tokenizer's own incremental decoder (tokenizers' DecodeStream, llama.cpp's token pieces): O(1) per token.
"""

from __future__ import annotations

import codecs
from typing import Callable

from glmkit.convert import families


class Tokenizer:
    def __init__(self, encode: Callable[[str], list[int]], decode: Callable[[list[int]], str], template: str,
                 token_id: Callable[[str], int | None], decoder: Callable[[], object]):
        self.encode = encode
        self.decode = decode
        self.decoder = decoder  # () -> an object with step(id) -> str and flush() -> str
        self.chat_template = template
        ids = {t: token_id(t) for t in families.SPECIAL_TOKENS}
        self.special_ids = {t: i for t, i in ids.items() if i is not None}
        self.stop_ids = families.stop_token_ids(self.special_ids)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template([messages], chat_template=self.chat_template,
                                            add_generation_prompt=add_generation_prompt, **kwargs)
        return rendered[0]


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


def from_hf(path) -> Tokenizer:
    from glmkit.convert.tokenizer import load_hf_tokenizer

    tok = load_hf_tokenizer(path)
    template = tok.chat_template or families.chat_format(name_or_path=str(path)).template

    def token_id(t: str):
        i = tok.convert_tokens_to_ids(t)
        return None if i is None or i == tok.unk_token_id else i

    return Tokenizer(lambda s: tok(s, add_special_tokens=False)["input_ids"],
                     lambda ids: tok.decode(ids, skip_special_tokens=False), template, token_id,
                     lambda: _DecodeStream(tok.backend_tokenizer))


def from_llama(llm) -> Tokenizer:
    """llama.cpp's own tokenizer and the template embedded in the GGUF."""
    template = llm.metadata.get("tokenizer.chat_template") or families.CHAT_FORMATS["glm4"].template

    def encode(s: str) -> list[int]:
        return llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)

    def token_id(t: str):
        ids = encode(t)
        return ids[0] if len(ids) == 1 else None

    return Tokenizer(encode, lambda ids: llm.detokenize(ids, special=True).decode("utf-8", errors="replace"),
                     template, token_id, lambda: _PieceStream(lambda t: llm.detokenize([t], special=True)))
