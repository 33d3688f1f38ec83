"""Check a converted model against its source: same text in, compare next-token distributions.

Figures are the ones llama.cpp's perplexity tool reports for quantized models: top-1 agreement (how often the
argmax token is the same) and mean KL divergence KL(source || converted) per position.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from glmkit.runtimes.logits import log_softmax
from glmkit.runtimes.logits import logits as artifact_logits

# Minimum top-1 agreement per weight precision. fp16/f32 differ from fp32 only by rounding, which can flip a
# near-tie now and then; int8 per-channel keeps ~99 % on trained models; int4 group-wise typically 85–95 %, so
# 75 % flags a broken conversion (wrong rope, lost tokens: those give < 20 %) without failing honest int4.
THRESHOLDS = {"f32": 0.99, "fp32": 0.99, "fp16": 0.98, "f16": 0.98, "bf16": 0.97,
              "int8": 0.93, "q8_0": 0.93, "int4": 0.75, "q4_0": 0.70, "q4_k_m": 0.75, "q5_k_m": 0.8, "q6_k": 0.85,
              # llama.cpp's lower types, imatrix or not: glm4-tiny keeps 86-96 % at 3-5 bits, 72-84 % at 2 bits,
              # 66-69 % at 1.5-1.75 bits on held-out text; a wrong rope or lost tokens gives < 20 %
              "q5_k_s": 0.8, "q5_0": 0.8, "q4_k_s": 0.75, "iq4_nl": 0.7, "iq4_xs": 0.7, "q3_k_l": 0.6,
              "q3_k_m": 0.6, "q3_k_s": 0.6, "iq3_m": 0.6, "iq3_s": 0.6, "iq3_xs": 0.6, "iq3_xxs": 0.6, "q2_k": 0.45,
              "q2_k_s": 0.45, "iq2_m": 0.45, "iq2_s": 0.45, "iq2_xs": 0.4, "iq2_xxs": 0.4, "iq1_m": 0.3, "iq1_s": 0.3}
DEFAULT_TOKENS = 512  # 1 flip = 0.2 %: fine enough to judge a 99 % bar


@dataclass
class Verification:
    precision: str
    tokens: int
    top1_agreement: float
    mean_kl: float
    max_abs_logit_diff: float
    threshold: float
    passed: bool
    gated: bool = True  # False for random-weight sources, whose near-flat predictions make agreement noise

    def summary(self) -> str:
        verdict = ("passed" if self.passed else "FAILED") if self.gated else "reported only (random weights)"
        return (f"verification {verdict}: top-1 agreement {self.top1_agreement:.1%} (threshold {self.threshold:.0%}), "
                f"mean KL {self.mean_kl:.4f} over {self.tokens} tokens")

    def to_dict(self) -> dict:
        return asdict(self)


def compare(ref_logits: np.ndarray, logits: np.ndarray, precision: str, gated: bool = True,
            rows: int = 32) -> Verification:
    """Compare [positions, vocab] logits from the source (ref) and the converted model.

    Worked in float64 a few rows at a time: with GLM-4's 151,552-token vocabulary a whole-matrix float64 copy of
    512 positions is 620 MB, and the log-softmaxes need several."""
    n_pos = min(len(ref_logits), len(logits))
    n_voc = min(ref_logits.shape[-1], logits.shape[-1])  # a padded vocabulary may add never-predicted columns
    agree, kl, max_abs = 0, 0.0, 0.0
    for a in range(0, n_pos, rows):
        ref = np.asarray(ref_logits[a:a + rows, :n_voc], dtype=np.float64)
        got = np.asarray(logits[a:a + rows, :n_voc], dtype=np.float64)
        agree += int(np.sum(ref.argmax(-1) == got.argmax(-1)))
        max_abs = max(max_abs, float(np.abs(ref - got).max()))
        lp, lq = log_softmax(ref), log_softmax(got)
        kl += float(np.sum(np.exp(lp) * (lp - lq)))
    top1 = agree / n_pos
    threshold = THRESHOLDS.get(precision, 0.75)
    return Verification(precision, n_pos, top1, max(kl / n_pos, 0.0), max_abs, threshold,
                        top1 >= threshold or not gated, gated)


def reference_fits(num_parameters: int, candidate_bytes: int) -> str | None:
    """None when the whole fp32 reference and the converted model fit in available memory, else why not (a 9B
    model's fp32 reference alone is 37.6 GB): then the reference runs block by block."""
    import psutil

    need = num_parameters * 4 + candidate_bytes + (1 << 30)
    have = psutil.virtual_memory().available
    if need <= have:
        return None
    return f"the whole fp32 reference needs about {need / 2**30:.1f} GB, {have / 2**30:.1f} GB is available"


def candidate_fits(candidate_bytes: int) -> str | None:
    """None when the converted model itself can run here for its logits, else why it cannot."""
    import psutil

    need, have = candidate_bytes + (1 << 30), psutil.virtual_memory().total
    if need <= have:
        return None
    return (f"verification skipped: the converted model needs about {need / 2**30:.1f} GB to run and this machine "
            f"has {have / 2**30:.1f} GB; verify on a machine with more memory")


def check(reference_dir, candidate: Path, precision: str, *, parameters: int, candidate_bytes: int,
          gated: bool, quiet: bool = False) -> tuple[Verification | None, dict]:
    """The verification step every converter runs: the candidate artifact's logits against the source's in fp32 —
    transformers' whole model where it fits, else the source run one block at a time (blockwise.py), so a 9B or
    32B conversion on a 24 GB machine is verified too. Skipped (saying why) only when the candidate itself cannot
    run here. Returns the result and its manifest entry."""
    from glmkit.common import progress

    skipped = candidate_fits(candidate_bytes)
    if skipped:
        progress.say(skipped, quiet)
        return None, {"skipped": skipped}
    from glmkit.common import manifest

    ids = verification_ids(reference_dir)
    whole = reference_fits(parameters, candidate_bytes)
    if (manifest.read(reference_dir) or {}).get("lazy_weights"):  # no files for transformers to load
        whole = "the source's weights are generated when read"
    if whole is None:
        progress.say("verifying against transformers (fp32)", quiet)
        ref, how = artifact_logits(reference_dir, ids, backend="transformers"), "transformers fp32, whole model"
    else:
        from . import blockwise

        progress.say(f"verifying against the source block by block in fp32 ({whole})", quiet)
        with progress.task("reference logits, block by block", total=None, quiet=quiet):
            ref = blockwise.run(reference_dir, [ids], logits=True)[0]  # type: ignore[index]
        how = "transformers fp32, block by block"
    result = compare(ref, artifact_logits(candidate, ids), precision, gated=gated)
    progress.say(result.summary(), quiet)
    return result, {**result.to_dict(), "reference": how}


def reject(tmp: Path, out: Path, summary: str, hint: str):
    """Move a failed output aside to OUT.rejected and return the error to raise."""
    import os
    import shutil

    from glmkit.glm4.errors import VerificationError

    rejected = out.with_name(out.name + ".rejected")
    if rejected.is_dir():
        shutil.rmtree(rejected)
    os.replace(tmp, rejected)
    return rejected, VerificationError(f"{summary}; the output was kept at {rejected} for inspection — {hint}")


def verification_text() -> str:
    """Fixed text: glm4-tiny's held-out code plus a multilingual line, wrapped in the GLM-4 chat format."""
    from glmkit.glm4.template import render_turns
    from glmkit.sources.embedded import held_out_text

    multilingual = "你好，世界。こんにちは。안녕하세요. Привет, мир! مرحبا. Grüße! 🤖 3.14159 x = [1, 2, 3]\n"
    return render_turns([(multilingual, held_out_text()[:6000])])


def verification_ids(tokenizer_dir: str | Path, n: int = DEFAULT_TOKENS) -> list[int]:
    from glmkit.sources.tokenizer import load_hf_tokenizer

    tok = load_hf_tokenizer(tokenizer_dir)
    return tok(verification_text(), add_special_tokens=False)["input_ids"][:n]


def tokenization(source_dir: str | Path, candidate: Path, gate: bool = True, ir: bool = True) -> dict:
    """Encode the tokenizer probes (many scripts, emoji, CRLF, digit runs) with the source's tokenizer and the
    artifact's; the manifest entry says how many texts came out identical and where the first one differs."""
    from glmkit.runtimes.encode import artifact_token_ids
    from glmkit.sources.corpus import TOKENIZER_PROBES
    from glmkit.sources.tokenizer import source_token_ids

    texts = list(TOKENIZER_PROBES)
    ref, got = source_token_ids(source_dir, texts), artifact_token_ids(candidate, texts, ir=ir)
    diffs = [i for i, (a, b) in enumerate(zip(ref, got)) if a != b]
    record: dict = {"texts": len(texts), "identical": len(texts) - len(diffs), "gated": gate,
              "passed": not diffs or not gate}
    if diffs:
        a, b = ref[diffs[0]], got[diffs[0]]
        at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        record["first_difference"] = {"text": texts[diffs[0]][:60], "token": at, "source": a[at:at + 4],
                                      "artifact": b[at:at + 4]}
    return record


def tokenization_summary(record: dict, what: str = "tokenizer") -> str:
    verdict = "identical" if record["identical"] == record["texts"] else (
        "FAILED" if record["gated"] else "differs (recorded)")
    return f"{what}: {record['identical']}/{record['texts']} probe texts encode as the source's — {verdict}"
