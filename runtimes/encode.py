"""How an artifact's own tokenizer encodes text: llama.cpp's for a GGUF, openvino-tokenizers' IR for an OpenVINO
directory, tokenizers' tokenizer.json for a transformers checkpoint. Plain text, no special tokens added."""

from __future__ import annotations

from pathlib import Path


def artifact_token_ids(model: str | Path, texts: list[str], ir: bool = True) -> list[list[int]]:
    """Token ids of each text by the artifact's tokenizer. For an OpenVINO directory, ir=True reads the IR
    tokenizer (what openvino-genai and OVMS use); ir=False the tokenizer.json beside it (what glmkit's runtime
    uses)."""
    from .load import detect_backend

    kind = detect_backend(str(model))
    if kind == "openvino" and not ir:
        kind = "transformers"  # the tokenizer.json beside the IR
    return TOKENIZERS[kind](Path(model), texts)


def _llamacpp(path: Path, texts: list[str]) -> list[list[int]]:
    """llama.cpp's tokenizer through its C API on a vocabulary-only load (no context: nothing to warn about)."""

    import llama_cpp as lc

    from .llamacpp import vocab_only

    with vocab_only(path) as model:
        vocab = lc.llama_model_get_vocab(model)
        out = []
        for t in texts:
            data = t.encode("utf-8")
            buf = (lc.llama_token * (len(data) + 8))()
            n = lc.llama_tokenize(vocab, data, len(data), buf, len(buf), False, False)
            out.append(list(buf[:n]))
        return out


def _openvino(path: Path, texts: list[str]) -> list[list[int]]:
    """The IR tokenizer as openvino-genai runs it (plain text: no [gMASK]<sop> added)."""
    import openvino_genai as ov_genai

    tok = ov_genai.Tokenizer(str(path))
    return [[int(i) for i in tok.encode(t, add_special_tokens=False).input_ids.data[0]] for t in texts]


def _tokenizer_json(path: Path, texts: list[str]) -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


# backend → the tokenizer its engine runs
TOKENIZERS = {"llamacpp": _llamacpp, "openvino": _openvino, "transformers": _tokenizer_json}
