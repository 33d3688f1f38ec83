"""Calibration text for data-aware quantization (importance matrices, NNCF's GPTQ/AWQ, AutoRound).

Calibration and evaluation never share text. `embedded` is `data/calibration.txt`: files from the training side
of the embedded corpus (corpus.py's split, the side glm4-tiny was trained on) plus a few chat turns in several
languages. Verification and glm-bench quality score the held-out side (embedded.held_out_text), so a data-aware
artifact's recorded quality is measured on text its calibration never saw.
"""

from __future__ import annotations

from pathlib import Path

from glmkit.glm4 import families
from glmkit.glm4.errors import GlmkitError
from glmkit.glm4.template import render_turns

CALIBRATION_FILE = Path(__file__).parent / "data" / "calibration.txt"
CHUNK_TOKENS = 512  # llama.cpp's imatrix tool evaluates 512-token chunks from an empty KV cache
EMBEDDED_CHARS = 150_000

# Chat turns in the GLM-4 format, so the special tokens and several scripts are in the calibration's activations.
# Written for glmkit; none of it appears in the held-out text or the tokenizer probes.
CHAT_TURNS = (
    ("请用三句话解释什么是量化。", "量化把模型的权重从十六位浮点数换成更少的比特，例如四比特整数。这样文件更小，"
     "内存读取更快，所以在笔记本电脑上生成得更快。代价是一点精度，需要和原模型比较才能知道损失多少。"),
    ("What does an importance matrix change?", "It tells the quantizer which input columns carry the largest "
     "activations, so their rounding error counts more when the scales are chosen."),
    ("東京から大阪まで新幹線でどのくらいかかりますか。", "のぞみ号でおよそ二時間半です。"),
    ("Wie viele Tage hat ein Schaltjahr?", "Ein Schaltjahr hat 366 Tage; der Februar hat dann 29 Tage."),
    ("Напиши функцию, которая суммирует список.", "def total(xs):\n    return sum(xs)\n"),
)


def make_embedded(max_chars: int = EMBEDDED_CHARS) -> str:
    """The text of data/calibration.txt: every 7th file of the corpus's training side (for variety) up to
    `max_chars`, then the chat turns. Run by hand to rebuild the file; the shipped file keeps results the same
    on every Python version."""
    from glmkit.sources.corpus import stdlib_texts

    parts, total = [], 0
    for i, text in enumerate(stdlib_texts(held_out=False)):
        if i % 7 or len(text) < 2000:
            continue
        parts.append(text[:12_000])
        total += len(parts[-1])
        if total >= max_chars:
            break
    chat = "".join(render_turns([turn]) for turn in CHAT_TURNS)
    return "\n\n".join(parts) + "\n\n" + chat + "\n"


def calibration_text(dataset: str) -> str:
    """`embedded` or a UTF-8 file's text."""
    if dataset == "embedded":
        return CALIBRATION_FILE.read_text(encoding="utf-8")
    path = Path(dataset)
    if not path.is_file():
        raise GlmkitError(f"{dataset}: no such calibration file; give a UTF-8 text file or 'embedded'")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GlmkitError(f"{dataset}: not UTF-8 text; give a UTF-8 text file or 'embedded'") from None
    if not text.strip():
        raise GlmkitError(f"{dataset}: the calibration file is empty")
    return text


def texts(dataset: str, num_samples: int, chunk_chars: int = 1200) -> list[str]:
    """Up to `num_samples` samples of about `chunk_chars`, cut at paragraph breaks (NNCF takes text samples)."""
    chunks, cur = [], ""
    for para in calibration_text(dataset).split("\n\n"):
        cur = f"{cur}\n\n{para}" if cur else para
        if len(cur) >= chunk_chars:
            chunks.append(cur[: chunk_chars * 2])
            cur = ""
    if cur.strip():
        chunks.append(cur)
    return chunks[:num_samples]


def token_chunks(tokenizer_dir: str | Path, dataset: str, n_chunks: int,
                 chunk_tokens: int = CHUNK_TOKENS) -> list[list[int]]:
    """Up to `n_chunks` chunks of exactly `chunk_tokens` ids, each opening with `[gMASK]<sop>` as every GLM-4
    prompt does, cut from the calibration text in order."""
    from glmkit.sources.tokenizer import load_hf_tokenizer

    tok = load_hf_tokenizer(tokenizer_dir)
    prefix = tok(families.PROMPT_PREFIX, add_special_tokens=False)["input_ids"]
    body = chunk_tokens - len(prefix)
    ids = tok(calibration_text(dataset), add_special_tokens=False)["input_ids"]
    chunks = [prefix + ids[a:a + body] for a in range(0, len(ids) - body + 1, body)][:n_chunks]
    if not chunks:
        raise GlmkitError(f"{dataset}: calibration text shorter than one {chunk_tokens}-token chunk")
    return chunks
