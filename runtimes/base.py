"""The one runtime interface: every backend yields token ids; glmkit does the rest the same way for all.

Backends implement `_token_stream(prompt_ids, config, stats)` (and may reuse the KV of a shared prefix, reporting
it in `stats["reused"]`, their own figures in `stats["engine"]`: per call, so calls may run at once). Prompt building (GLM-4 chat template, `[gMASK]<sop>`), context limits, stop tokens, stop strings,
incremental detokenisation, the Z1 reasoning split and wall-clock timing live here, once.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from typing import Iterator

from glmkit.convert import families
from glmkit.convert.errors import GlmkitError

from .memory import peak_rss_mb
from .streaming import THINK_END, TextAssembler
from .types import GenerationConfig, GenerationResult, TextDelta


def split_reasoning(text: str, thinks: bool) -> tuple[str, str | None]:
    """Z1 answers start inside <think> (the template opened it); the answer is what follows </think>."""
    if not thinks:
        return text, None
    if THINK_END not in text:
        return "", text.strip()
    thought, answer = text.split(THINK_END, 1)
    return answer.strip(), thought.replace("<think>", "").strip()


def shared_prefix(held: list[int], prompt_ids: list[int]) -> int:
    """How many of the held tokens a prompt starts with — never all of the prompt: its last token is decoded again,
    since its logits choose the first new token."""
    n = 0
    for a, b in zip(held, prompt_ids[:-1]):
        if a != b:
            break
        n += 1
    return n


class Runtime(ABC):
    """Load with glmkit.runtimes.load(); then generate(), stream() or chat()."""

    backend = "?"

    def __init__(self, tokenizer, chat_format: families.ChatFormat, context_length: int, name: str):
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.context_length = context_length
        self.name = name
        self.stop_ids = set(tokenizer.stop_ids)
        #: generations that may run at once (load(parallel=N)); stream() is thread-safe when it is above 1
        self.parallel = 1
        #: K and V of one token over all layers, in the cache type the engine runs (0 where unknown)
        self.kv_bytes_per_token = 0.0

    # -- what a backend provides -------------------------------------------------------------------------------
    @abstractmethod
    def _token_stream(self, prompt_ids: list[int], config: GenerationConfig, stats: dict) -> Iterator[int]:
        """Yield generated token ids one by one until the caller stops iterating (or max_new_tokens); put the
        prompt tokens whose KV was reused in stats["reused"] and the engine's own figures in stats["engine"]."""

    def reset_cache(self) -> None:
        """Forget the KV the engine holds, so the next call prefills its whole prompt (a cold start)."""

    def close(self) -> None:
        pass

    # -- shared -------------------------------------------------------------------------------------------------
    def prompt_ids(self, prompt, raw: bool = False, tools: list[dict] | None = None,
                   assistant_prefix: str = "") -> list[int]:
        """Token ids of a prompt: ids as given; chat messages through the model's GLM-4 chat template (with OpenAI
        `tools`, and `assistant_prefix` written after the generation prompt, e.g. a forced tool name); a plain
        string with `[gMASK]<sop>` in front, as GLM-4's own tokenizer encodes every text (raw=True: as it is)."""
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            return list(prompt)
        if isinstance(prompt, str):
            if raw or prompt.startswith(families.PROMPT_PREFIX):
                return self.tokenizer.encode(prompt)
            return self.tokenizer.encode(families.PROMPT_PREFIX + prompt)
        from .tools import attach_tools

        messages, tools = attach_tools(list(prompt), tools, self.tokenizer.chat_template)
        return self.tokenizer.encode(self.tokenizer.render_chat(messages, tools=tools) + assistant_prefix)

    def budget(self, n_prompt: int, max_new_tokens: int) -> int:
        """Answer tokens that fit after a prompt of n_prompt tokens; a prompt that cannot fit is an error."""
        room = self.context_length - n_prompt
        if room < 1:
            raise GlmkitError(f"the prompt has {n_prompt} tokens but the context holds {self.context_length}; "
                              f"shorten it by at least {n_prompt - self.context_length + 1} tokens or load the "
                              "model with a larger n_ctx")
        return min(max_new_tokens, room)

    def stream(self, prompt, config: GenerationConfig | None = None, raw: bool = False,
               tools: list[dict] | None = None, assistant_prefix: str = "") -> Iterator:
        """Yield TextDelta pieces as they are decoded, then the GenerationResult last."""
        config = config or GenerationConfig()
        ids = self.prompt_ids(prompt, raw=raw, tools=tools, assistant_prefix=assistant_prefix)
        budget = self.budget(len(ids), config.max_new_tokens)
        is_chat = isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict)
        # GLM-4 answers "<|assistant|>\n…" and calls tools with "<|assistant|>name\n{…}": after a prompt ending
        # in <|assistant|>, a first "\n" says "an answer follows" and is not part of it.
        marker = "\n" if is_chat and ids and ids[-1] == self.tokenizer.special_ids.get("<|assistant|>") else ""
        text = TextAssembler(config.stop, thinks=self.chat_format.thinks and is_chat and not assistant_prefix,
                             marker=marker)
        decoder = self.tokenizer.decoder()
        out: list[int] = []
        finish = "length"
        stats: dict = {}
        t0 = time.perf_counter()
        stamps: list[float] = []
        tokens = self._token_stream(ids, dataclasses.replace(config, max_new_tokens=budget), stats)
        try:
            for tok in tokens:
                stamps.append(time.perf_counter())
                if tok in self.stop_ids and not config.ignore_eos:
                    finish = "stop"
                    break
                out.append(tok)
                yield from text.push(decoder.step(tok))
                if text.stopped:
                    finish = "stop_string"
                    break
                if len(out) >= budget:
                    break
            else:  # the engine ended by itself before the budget: it met a stop token
                if len(out) < budget:
                    finish = "stop"
        except KeyboardInterrupt:
            finish = "interrupted"
        finally:
            close = getattr(tokens, "close", None)
            if close:
                close()
        t_end = time.perf_counter()
        if finish != "interrupted":
            yield from text.push(decoder.flush())
            yield from text.finish()
        ttft = (stamps[0] if stamps else t_end) - t0
        decode_time = t_end - (stamps[0] if stamps else t_end)
        reused = stats.get("reused", 0)
        evaluated = len(ids) - reused
        yield GenerationResult(
            text=text.content, token_ids=out, finish_reason=finish, prompt_tokens=len(ids), ttft_ms=ttft * 1000,
            prefill_tps=evaluated / ttft if ttft > 0 else 0.0,
            decode_tps=(len(out) - 1) / decode_time if len(out) > 1 and decode_time > 0 else 0.0,
            peak_rss_mb=peak_rss_mb(), reasoning=text.reasoning if text.thinks else None,
            cached_tokens=reused, max_new_tokens=budget, clamped=budget < config.max_new_tokens,
            engine=stats.get("engine", {}), itl_ms=[(b - a) * 1000 for a, b in zip(stamps, stamps[1:len(out)])])

    def generate(self, prompt, config: GenerationConfig | None = None, raw: bool = False,
                 tools: list[dict] | None = None, assistant_prefix: str = "") -> GenerationResult:
        result = None
        for event in self.stream(prompt, config, raw=raw, tools=tools, assistant_prefix=assistant_prefix):
            result = event
        return result

    def chat(self, system: str | None = None, config: GenerationConfig | None = None):
        from .session import ChatSession

        return ChatSession(self, system=system, config=config)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["GenerationConfig", "GenerationResult", "Runtime", "TextDelta", "split_reasoning"]
