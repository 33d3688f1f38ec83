"""Speculative decoding's shared parts: the options load() takes, prompt lookup's n-gram proposer, and the check
that a draft model reads the same token ids as the main one.

A proposal is verified in one engine pass over [last token, p1 … pk]; the target then chooses each next token
from its own logits with the request's own sampler, in order, and a proposal is kept only while it equals that
choice. For proposals that do not depend on a draw (prompt lookup, a greedy draft) this is speculative sampling's
acceptance rule with a point-mass proposal: every token is the target's own draw, so greedy output is the plain
run's and a sampled one has the plain run's distribution (with llama.cpp's seeded chain, the same tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from glmkit.glm4.errors import GlmkitError

PROMPT_LOOKUP = "prompt-lookup"
KINDS = (PROMPT_LOOKUP, "draft")
# Defaults measured with glm-bench run --speculative on glm4-tiny's input-grounded edits (see README).
DRAFT_TOKENS = {PROMPT_LOOKUP: 8, "draft": 4}
NGRAM_SIZE = 4


@dataclass(frozen=True)
class Speculation:
    """What load(speculative=…, draft=…, draft_tokens=…, ngram_size=…) asked for."""

    kind: str                 # prompt-lookup | draft
    draft: str | None = None  # the draft model (an artifact of the main model's backend)
    tokens: int = 8           # proposed tokens per verification pass
    ngram: int = NGRAM_SIZE   # prompt lookup: the longest n-gram matched

    @classmethod
    def from_options(cls, speculative: str | None = None, draft: str | None = None,
                     draft_tokens: int | None = None, ngram_size: int | None = None) -> Speculation | None:
        if speculative is None and draft is None:
            if draft_tokens is not None or ngram_size is not None:
                raise GlmkitError("draft_tokens and ngram_size tune speculative decoding: add --prompt-lookup or "
                                  "--draft MODEL")
            return None
        kind = speculative or "draft"
        if kind not in KINDS:
            raise GlmkitError(f"speculative {kind}: choose {' or '.join(KINDS)}")
        if kind == "draft" and not draft:
            raise GlmkitError("speculative draft needs a draft model: --draft MODEL (same tokenizer as the model)")
        if kind == PROMPT_LOOKUP and draft:
            raise GlmkitError("choose prompt lookup or a draft model, not both")
        tokens = DRAFT_TOKENS[kind] if draft_tokens is None else draft_tokens
        if not 1 <= tokens <= 64:
            raise GlmkitError(f"draft_tokens {tokens}: give 1 to 64 proposed tokens per step")
        ngram = NGRAM_SIZE if ngram_size is None else ngram_size
        if not 1 <= ngram <= 16:
            raise GlmkitError(f"ngram_size {ngram}: give 1 to 16")
        return cls(kind, draft, tokens, ngram)


class NgramLookup:
    """Prompt lookup: the tokens that followed the earliest occurrence of the text's last n tokens (n from
    `ngram` down to 1), over the prompt and the answer so far. The earliest, as transformers' and openvino-genai's
    prompt lookup take it: that is the input an edit copies from, where the latest is often a repeat inside the
    answer (on glm4-tiny's edits: 3.7 tokens a pass against 2.9). Indexed as tokens arrive, so a proposal costs a
    dictionary lookup per n however long the conversation. Only emitted tokens are added, never proposals, so
    nothing has to be taken back."""

    def __init__(self, ngram: int, tokens=()):
        self.ngram = ngram
        self.tokens: list[int] = list(tokens)
        self.index: list[dict] = [{} for _ in range(ngram + 1)]
        self.indexed = 0  # n-grams ending before this position are in the index

    def extend(self, tokens) -> None:
        self.tokens.extend(tokens)

    def propose(self, k: int) -> list[int]:
        t = self.tokens
        # index every n-gram that has a continuation (ends before the last token), the earliest occurrence kept
        for end in range(self.indexed, len(t) - 1):
            for n in range(1, min(self.ngram, end + 1) + 1):
                self.index[n].setdefault(tuple(t[end - n + 1:end + 1]), end + 1)
        self.indexed = max(self.indexed, len(t) - 1)
        for n in range(min(self.ngram, len(t)), 0, -1):
            start = self.index[n].get(tuple(t[-n:]))
            if start is not None:
                return t[start:start + k]
        return []


class Pacer:
    """How many tokens to propose before the next pass: all of them while proposals are kept; after a pass that
    kept none, that many plain steps before the next try, doubling up to 16 while none is kept. A pass over k+1
    tokens costs more than one over a token (llama.cpp, bench shape: 1.46× for k=1, 5.7× for k=8), so text that
    does not repeat its context must not pay for proposals on every step."""

    def __init__(self, tokens: int):
        self.tokens, self.wait, self.backoff = tokens, 0, 0

    def want(self) -> int:
        if self.wait:
            self.wait -= 1
            return 0
        return self.tokens

    def kept(self, proposed: int, accepted: int) -> None:
        if proposed and not accepted:
            self.backoff = min(16, max(1, 2 * self.backoff))
            self.wait = self.backoff
        elif accepted:
            self.backoff = 0


def same_vocabulary(main: list[str], draft: list[str], main_name: str, draft_name: str) -> None:
    """A draft proposes token ids; they mean the same text only under the same vocabulary."""
    if main == draft:
        return
    if len(main) != len(draft):
        why = f"{len(draft)} tokens against {len(main)}"
    else:
        i = next(i for i, (a, b) in enumerate(zip(main, draft)) if a != b)
        why = f"token {i} is {draft[i]!r} there, {main[i]!r} here"
    raise GlmkitError(f"draft {draft_name} has another tokenizer than {main_name} ({why}); a draft must share the "
                      "model's vocabulary (a smaller GLM-4 of the same family)")
