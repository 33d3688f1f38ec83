"""The one runtime interface: every backend yields token ids; glmkit does the rest the same way for all.

Backends implement `_token_stream(prompt_ids, config)`. Prompt building (GLM-4 chat template), stop tokens,
stop strings, incremental detokenisation, Z1 reasoning split and wall-clock timing live here, once.
"""

from __future__ import annotations

import resource
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Iterator

from glmkit.convert import families

THINK_END = "</think>"


@dataclass
class GenerationConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str          # stop (a stop token) | stop_string | length | interrupted
    prompt_tokens: int
    ttft_ms: float              # wall clock, request to first generated token
    prefill_tps: float          # prompt tokens / ttft
    decode_tps: float           # tokens after the first / time after the first
    peak_rss_mb: float          # this process's peak resident memory so far
    reasoning: str | None = None  # Z1 models: the <think>…</think> part, kept out of `text` and history
    engine: dict = field(default_factory=dict)  # the engine's own figures, as a cross-check
    itl_ms: list[float] = field(default_factory=list)  # inter-token latencies (time per output token)

    def to_dict(self) -> dict:
        return asdict(self)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def split_reasoning(text: str, thinks: bool) -> tuple[str, str | None]:
    """Z1 answers start inside <think> (the template opened it); the answer is what follows </think>."""
    if not thinks:
        return text, None
    if THINK_END not in text:
        return "", text.strip()
    thought, answer = text.split(THINK_END, 1)
    return answer.strip(), thought.replace("<think>", "").strip()


class Runtime(ABC):
    """Load with glmkit.runtimes.load(); then generate(), stream() or chat()."""

    backend = "?"

    def __init__(self, tokenizer, chat_format: families.ChatFormat, context_length: int, name: str):
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.context_length = context_length
        self.name = name
        self.stop_ids = set(tokenizer.stop_ids)

    # -- what a backend provides -------------------------------------------------------------------------------
    @abstractmethod
    def _token_stream(self, prompt_ids: list[int], config: GenerationConfig) -> Iterator[int]:
        """Yield generated token ids one by one until the caller stops iterating (or max_new_tokens)."""

    def _engine_figures(self) -> dict:
        return {}

    def close(self) -> None:
        pass

    # -- shared -------------------------------------------------------------------------------------------------
    def prompt_ids(self, prompt_or_messages) -> list[int]:
        """Token ids of a plain prompt, of chat messages through the model's GLM-4 chat template, or given as ids
        (benchmarks need prompts of an exact length)."""
        if isinstance(prompt_or_messages, list) and prompt_or_messages and isinstance(prompt_or_messages[0], int):
            return list(prompt_or_messages)
        if isinstance(prompt_or_messages, str):
            return self.tokenizer.encode(prompt_or_messages)
        return self.tokenizer.encode(self.tokenizer.render_chat(list(prompt_or_messages)))

    def stream(self, prompt_or_messages, config: GenerationConfig | None = None) -> Iterator:
        """Yield text pieces as they are decoded, then the GenerationResult last."""
        config = config or GenerationConfig()
        ids = self.prompt_ids(prompt_or_messages)
        out: list[int] = []
        text, emitted, finish = "", 0, "length"
        t0 = time.perf_counter()
        t_first = None
        stamps: list[float] = []
        tokens = self._token_stream(ids, config)
        try:
            for tok in tokens:
                stamps.append(time.perf_counter())
                if t_first is None:
                    t_first = stamps[0]
                if tok in self.stop_ids and not config.ignore_eos:
                    finish = "stop"
                    break
                out.append(tok)
                text = self.tokenizer.decode(out)
                hit = next((s for s in config.stop if s in text[max(0, emitted - len(s)):]), None)
                if hit:
                    text = text[: text.index(hit, max(0, emitted - len(hit)))]
                    finish = "stop_string"
                if not text.endswith("\ufffd") and len(text) > emitted:  # never emit half a UTF-8 character
                    yield text[emitted:]
                    emitted = len(text)
                if hit or len(out) >= config.max_new_tokens:
                    break
            else:  # the engine ended by itself before the budget: it met a stop token
                if len(out) < config.max_new_tokens:
                    finish = "stop"
        except KeyboardInterrupt:
            finish = "interrupted"
        finally:
            close = getattr(tokens, "close", None)
            if close:
                close()
        t_end = time.perf_counter()
        if len(text) > emitted and finish != "interrupted":
            yield text[emitted:]
        ttft = (t_first or t_end) - t0
        decode_time = t_end - (t_first or t_end)
        is_chat = isinstance(prompt_or_messages, list) and bool(prompt_or_messages) and \
            isinstance(prompt_or_messages[0], dict)
        answer, reasoning = split_reasoning(text, self.chat_format.thinks and is_chat)
        yield GenerationResult(
            text=answer, token_ids=out, finish_reason=finish, prompt_tokens=len(ids), ttft_ms=ttft * 1000,
            prefill_tps=len(ids) / ttft if ttft > 0 else 0.0,
            decode_tps=(len(out) - 1) / decode_time if len(out) > 1 and decode_time > 0 else 0.0,
            peak_rss_mb=peak_rss_mb(), reasoning=reasoning, engine=self._engine_figures(),
            itl_ms=[(b - a) * 1000 for a, b in zip(stamps, stamps[1:len(out)])])

    def generate(self, prompt_or_messages, config: GenerationConfig | None = None) -> GenerationResult:
        result = None
        for piece in self.stream(prompt_or_messages, config):
            result = piece
        return result

    def chat(self, system: str | None = None, config: GenerationConfig | None = None):
        from .session import ChatSession

        return ChatSession(self, system=system, config=config)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
