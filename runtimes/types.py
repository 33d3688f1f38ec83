"""What goes into a generation and what comes out, the same for every backend.

`Runtime.stream()` yields `TextDelta`s and then one `GenerationResult` (in the manner of mlx-lm's
GenerationResponse); `generate()` returns the result alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .structure import Structure


@dataclass
class GenerationConfig:
    """Sampling, identical on every backend: repetition penalty, then temperature, then top-k, then top-p, then a
    draw from what is left (transformers' order; top-k commutes with temperature, so llama.cpp's chain and
    openvino-genai's sampler compute the same distribution). temperature 0 is greedy. frequency_penalty and
    presence_penalty are OpenAI's: subtracted from a token's logit per occurrence in the answer so far, and once if
    it occurs at all (the prompt does not count). `structure` constrains the answer (runtimes/structure.py)."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    structure: Structure | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class TextDelta:
    """A piece of streamed text: never half a UTF-8 character, never the start of a stop string. Z1 models'
    `<think>` part comes as reasoning=True deltas, the answer as reasoning=False."""

    text: str
    reasoning: bool = False


@dataclass
class GenerationResult:
    text: str                   # the answer: exactly the joined non-reasoning TextDeltas
    token_ids: list[int]
    finish_reason: str          # stop (a stop token) | stop_string | length | interrupted
    prompt_tokens: int
    ttft_ms: float              # wall clock, request to first generated token
    prefill_tps: float          # prompt tokens evaluated / ttft (a reused prefix is not evaluated again)
    decode_tps: float           # tokens after the first / time after the first
    peak_rss_mb: float          # this process's peak resident memory so far
    reasoning: str | None = None  # Z1 models: the <think>…</think> part, kept out of `text` and history
    cached_tokens: int = 0      # prompt tokens whose KV the engine already held (prefix reuse across calls)
    max_new_tokens: int = 0     # the answer budget used: the request's, or less when the context had less room
    clamped: bool = False       # the context left less room than the request's max_new_tokens
    engine: dict = field(default_factory=dict)  # the engine's own figures, as a cross-check
    itl_ms: list[float] = field(default_factory=list)  # inter-token latencies (time per output token)

    def to_dict(self) -> dict:
        return asdict(self)
