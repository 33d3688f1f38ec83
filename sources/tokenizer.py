"""GLM-4 tokenizers: build one for embedded models, and convert the original tiktoken file to tokenizer.json.

GLM-4's tokenizer is byte-level BPE defined by a tiktoken rank file (`tokenizer.model`: base64 token, rank),
split by GLM-4's pre-tokenizer regex, with the special tokens numbered right after the ranks. Its tokenizer.json
is derived from that file; glmkit does the same for its own tokenizers, so every format agrees by construction.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from glmkit.glm4 import families
from glmkit.glm4.errors import GlmkitError


def train_ranks(texts: Iterable[str], n_regular: int) -> dict[bytes, int]:
    """Train byte-level BPE under GLM-4's pre-tokenizer; return tiktoken-style ranks (bytes → rank)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer(Regex, pre_tokenizers)
    trainer = trainers.BpeTrainer(vocab_size=n_regular, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    decode = _byte_decoder()
    vocab = tok.get_vocab()
    return {bytes(decode[c] for c in s): i for s, i in sorted(vocab.items(), key=lambda kv: kv[1])}


def ranks_from_tokenizer_json(tok) -> dict[bytes, int]:
    """Ranks of a byte-level BPE `tokenizers.Tokenizer`'s regular vocabulary (the special tokens left out)."""
    decode = _byte_decoder()
    specials = set(families.SPECIAL_TOKENS)
    vocab = tok.get_vocab(with_added_tokens=False)
    return {bytes(decode[c] for c in s): i for s, i in vocab.items() if s not in specials}


def write_tiktoken(ranks: dict[bytes, int], path: str | Path) -> None:
    """The original GLM-4 `tokenizer.model` format: one 'base64(token) rank' line per token, by rank."""
    lines = [f"{base64.b64encode(t).decode()} {r}" for t, r in sorted(ranks.items(), key=lambda kv: kv[1])]
    Path(path).write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def _uncached_tiktoken():
    """tiktoken caches every file it loads, local ones too, under a key made from the path alone: a tokenizer.model
    replaced at the same path (a re-download, another revision) would be read stale. Empty TIKTOKEN_CACHE_DIR is
    tiktoken's own switch to read the file itself."""
    before = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    try:
        yield
    finally:
        if before is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = before


def tiktoken_to_fast(model_file: str | Path):
    """Convert a GLM-4 tiktoken `tokenizer.model` into a `tokenizers.Tokenizer` (transformers' TikTokenConverter),
    with GLM-4's special tokens numbered after the ranks, as the original tokenization_chatglm.py numbers them."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    try:
        with _uncached_tiktoken():
            conv = TikTokenConverter(vocab_file=str(model_file), pattern=families.PRETOKENIZER_REGEX,
                                     additional_special_tokens=[])
            tok = conv.converted()
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise GlmkitError(f"{model_file}: not a tiktoken BPE file ({e}); copy tokenizer.model from the original "
                          "checkpoint") from None
    n = tok.get_vocab_size(with_added_tokens=False)
    if n != max(tok.get_vocab(with_added_tokens=False).values()) + 1:
        raise GlmkitError(f"{model_file}: token ranks are not contiguous; the file is corrupt")
    _add_specials(tok, n)
    return tok


def fast_from_ranks(ranks: dict[bytes, int]):
    with tempfile.TemporaryDirectory() as d:
        write_tiktoken(ranks, Path(d) / "tokenizer.model")
        return tiktoken_to_fast(Path(d) / "tokenizer.model")


def _add_specials(tok, first_id: int) -> None:
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in families.SPECIAL_TOKENS])
    got = {t: tok.token_to_id(t) for t in families.SPECIAL_TOKENS}
    want = {t: first_id + i for i, t in enumerate(families.SPECIAL_TOKENS)}
    if got != want:
        raise AssertionError(f"special token ids {got} != {want}")


def with_prompt_prefix(fast):
    """A copy of `fast` whose add_special_tokens=True puts `[gMASK]<sop>` in front, as GLM-4's own tokenizer does
    for every text (`tokenizer("hello")` → [gMASK] <sop> hello). Chat templates already write the prefix and are
    encoded with add_special_tokens=False, so it is never doubled."""
    from tokenizers import Tokenizer, processors

    out = Tokenizer.from_str(fast.to_str())
    ids = [(t, out.token_to_id(t)) for t in ("[gMASK]", "<sop>")]
    out.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="[gMASK] <sop> $A", pair="[gMASK] <sop> $A $B:1", special_tokens=ids),
    ])
    return out


def hf_tokenizer(fast, fmt: families.ChatFormat):
    """Wrap a `tokenizers.Tokenizer` as transformers' PreTrainedTokenizerFast with GLM-4's tokens, template and the
    `[gMASK]<sop>` prefix for plain text."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=with_prompt_prefix(fast), eos_token=families.EOS_TOKEN, pad_token=families.PAD_TOKEN,
        additional_special_tokens=[t for t in families.SPECIAL_TOKENS if t != families.EOS_TOKEN],
        chat_template=fmt.template, clean_up_tokenization_spaces=False, padding_side="left",
        model_input_names=["input_ids", "attention_mask"],
    )


def load_hf_tokenizer(path: str | Path):
    """AutoTokenizer for a local GLM-4 checkpoint, no remote code. fix_mistral_regex=False: transformers 4.57.3+
    warns about Mistral's regex for any local checkpoint saved by 4.57.x; GLM-4's regex is checked by glmkit."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, fix_mistral_regex=False)


def added_token_ids(tokenizer_json: str | Path) -> dict[str, int]:
    """Added (special) tokens of a tokenizer.json file by content: where GLM-4's special tokens live."""
    import json

    data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    return {t["content"]: t["id"] for t in data.get("added_tokens", [])}


def check_pretokenizer(tokenizer_json: dict) -> None:
    """Refuse a tokenizer whose pre-tokenizer is not GLM-4's regex: its ids would not mean what the model learned."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    items = pre.get("pretokenizers", [pre])
    regexes = [((p.get("pattern") or {}).get("Regex")) for p in items if p.get("type") == "Split"]
    if families.PRETOKENIZER_REGEX not in regexes:
        raise GlmkitError("tokenizer.json: the pre-tokenizer is not GLM-4's regex; this tokenizer does not belong "
                          "to a GLM-4 model")


def _pre_tokenizer(Regex, pre_tokenizers):
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(families.PRETOKENIZER_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def _byte_decoder() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {v: k for k, v in bytes_to_unicode().items()}


def pad_ranks(ranks: dict[bytes, int], n: int) -> dict[bytes, int]:
    """Fill ranks up to `n` with tokens no UTF-8 text contains (0xFF never occurs), like a padded vocabulary."""
    out = dict(ranks)
    r = len(out)
    while len(out) < n:
        out[b"\xff\xff" + r.to_bytes(3, "big")] = r
        r += 1
    return out


def source_token_ids(checkpoint_dir: str | Path, texts: list[str]) -> list[list[int]]:
    """Token ids by the source's own tokenizer, independent of glmkit's conversions: tiktoken itself on the
    original format's tokenizer.model (GLM-4's regex, its ranks), else tokenizers on the source's tokenizer.json."""
    path = Path(checkpoint_dir)
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    return [tiktoken_encoding(path / "tokenizer.model").encode_ordinary(t) for t in texts]


def tiktoken_encoding(model_file: str | Path):
    """tiktoken's Encoding for a GLM-4 tokenizer.model: the reference every converted tokenizer must match."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    with _uncached_tiktoken():
        ranks = load_tiktoken_bpe(str(model_file))
    return tiktoken.Encoding(Path(model_file).name, pat_str=families.PRETOKENIZER_REGEX, mergeable_ranks=ranks,
                             special_tokens={})
