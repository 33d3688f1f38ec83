"""OpenAI's logprob objects from glmkit's TokenLogprob lists (runtimes/logprobs.py).

Chat: `choices[].logprobs.content[] = {token, logprob, bytes, top_logprobs[]}`. Completions (the legacy form
lm-evaluation-harness reads): `{tokens, token_logprobs, top_logprobs, text_offset}`, the prompt's first token with
null where `echo` puts the prompt in front. Values are raw — the model's distribution before temperature,
penalties or a grammar — as vLLM's default gives them.
"""

from __future__ import annotations

from glmkit.runtimes.types import TokenLogprob


def _piece(tokenizer, token: int) -> str:
    """A token's text; a control token's is empty (it is never text, as in `content`)."""
    return "" if token in tokenizer.special_ids.values() else tokenizer.decode([token])


def chat(tokenizer, scored: list[TokenLogprob | None]) -> dict:
    def entry(token: int, logprob: float) -> dict:
        text = _piece(tokenizer, token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {"content": [{**entry(s.id, s.logprob), "top_logprobs": [entry(t, lp) for t, lp in s.top]}
                        for s in scored if s is not None], "refusal": None}


def completion(tokenizer, scored: list[TokenLogprob | None], ids: list[int], start_offset: int = 0) -> dict:
    """`scored[i]` for `ids[i]`; text offsets count from `start_offset` characters into the choice's text."""
    tokens, offsets, at = [], [], start_offset
    for t in ids:
        piece = _piece(tokenizer, t)
        tokens.append(piece)
        offsets.append(at)
        at += len(piece)
    return {"tokens": tokens, "token_logprobs": [None if s is None else s.logprob for s in scored],
            "top_logprobs": [None if s is None else {_piece(tokenizer, t): lp for t, lp in s.top} for s in scored],
            "text_offset": offsets}
