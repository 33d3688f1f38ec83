"""llama.cpp through llama-cpp-python: a GGUF file, decoded with llama.cpp's C API (llama_decode, its sampler chain).

The KV cache is kept between calls: a prompt that shares a prefix with what the context holds (the next turn of
a chat) prefills only the rest, as llama-server's slots do.
"""

from __future__ import annotations

import os
from typing import Iterator

from glmkit.convert.errors import GlmkitError

from .base import Runtime, shared_prefix
from .context import default_context
from .types import GenerationConfig

KV_TYPES = ("f16", "f32", "q8_0")


def gguf_hparams(path) -> dict:
    """The file's context length and KV shape, read by gguf-py (a vocab-only llama.cpp probe warns n_ctx_train = 0)."""
    from gguf import GGUFReader

    try:
        fields = GGUFReader(str(path)).fields
    except (ValueError, IndexError, KeyError, OSError) as e:
        raise GlmkitError(f"{path}: truncated or corrupt GGUF ({e.__class__.__name__}); re-create it with "
                          "glm-convert SRC --to gguf") from None
    arch = fields["general.architecture"].contents() if "general.architecture" in fields else ""

    def get(key, default=None):
        f = fields.get(f"{arch}.{key}")
        return f.contents() if f else default

    heads = get("attention.head_count", 1)
    return {"context_length": get("context_length"), "layers": get("block_count", 0),
            "kv_heads": get("attention.head_count_kv", heads),
            "head_dim": get("attention.key_length") or (get("embedding_length", 0) // max(1, heads))}


class LlamaCppRuntime(Runtime):
    backend = "llamacpp"

    def __init__(self, path, n_ctx: int | None = None, threads: int | None = None, n_batch: int = 512,
                 kv_cache: str = "f16", flash_attn: bool = True, prefix_cache: bool = True,
                 model_name: str | None = None):
        import llama_cpp

        from glmkit.convert import families

        from .tokenizer import from_llama

        if kv_cache not in KV_TYPES:
            raise GlmkitError(f"kv_cache {kv_cache}: choose one of {', '.join(KV_TYPES)}")
        if kv_cache == "q8_0" and not flash_attn:
            raise GlmkitError("kv_cache q8_0 needs flash attention in llama.cpp; drop --no-flash-attn")
        self.llama_cpp = llama_cpp
        self.n_batch = n_batch
        self.flash_attn = flash_attn
        self.prefix_cache = prefix_cache
        hp = gguf_hparams(path)
        n_ctx = default_context(hp["context_length"] or 4096, n_ctx, kv_cache, hp["layers"], hp["kv_heads"],
                                hp["head_dim"])
        kv = getattr(llama_cpp, f"GGML_TYPE_{kv_cache.upper()}")
        #: llama-cpp-python's Llama object and its llama_context pointer, for callers that drive the C API
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_batch,
                                   n_threads=threads or os.cpu_count(), type_k=kv, type_v=kv,
                                   flash_attn=flash_attn, verbose=False)
        self.ctx = self.llm._ctx.ctx
        self._held: list[int] = []  # token ids whose KV sequence 0 holds, in order
        tok = from_llama(self.llm)
        fmt = families.chat_format(name_or_path=model_name or str(path), template=tok.chat_template)
        # llama.cpp rounds its context up (to 256); glmkit holds to the length asked for
        super().__init__(tok, fmt, min(n_ctx, self.llm.n_ctx()), model_name or str(path))
        self._engine: dict = {}

    def _sampler(self, config: GenerationConfig, prompt_ids: list[int]):
        """llama.cpp's own sampler chain, in C: llama-cpp-python's Llama.generate samples in Python over the whole
        151,552-token vocabulary every step, which costs more than the forward pass of a small model. Order:
        penalties → top-k → temperature → top-p → draw, the distribution GenerationConfig documents."""
        lc = self.llama_cpp
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if config.repetition_penalty != 1.0:  # over the prompt and the answer, as transformers penalises
            n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.llm._model.model))
            penalties = lc.llama_sampler_init_penalties(n_vocab, self.context_length, config.repetition_penalty,
                                                        0.0, 0.0)
            for t in prompt_ids:
                lc.llama_sampler_accept(penalties, t)
            lc.llama_sampler_chain_add(chain, penalties)
        if config.greedy:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return chain
        if config.top_k:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(config.top_k))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(config.temperature))
        if config.top_p < 1.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(config.top_p, 1))
        seed = config.seed if config.seed is not None else lc.LLAMA_DEFAULT_SEED
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        return chain

    def _decode(self, tokens: list[int]) -> None:
        lc = self.llama_cpp
        for a in range(0, len(tokens), self.n_batch):
            chunk = tokens[a:a + self.n_batch]
            arr = (lc.llama_token * len(chunk))(*chunk)
            if lc.llama_decode(self.ctx, lc.llama_batch_get_one(arr, len(chunk))) != 0:
                self.reset_cache()
                raise GlmkitError(f"llama.cpp could not decode {len(chunk)} tokens at position {len(self._held)} "
                                  f"of a {self.context_length}-token context")
            self._held += chunk

    def reset_cache(self) -> None:
        lc = self.llama_cpp
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), False)  # cells marked free; no 100s-of-MB memset
        self._held = []

    def _reuse(self, prompt_ids: list[int]) -> int:
        """Keep the KV of the longest prefix shared with the held tokens and drop the rest; at least the last
        prompt token is decoded again, since its logits pick the first new token."""
        if not self.prefix_cache:
            self.reset_cache()
            return 0
        n = shared_prefix(self._held, prompt_ids)
        if n == 0:  # a clear, not a removal: llama.cpp then places the new tokens from the first cell again,
            self.reset_cache()  # and attention spans only them (4 % of decode speed with flash attention)
        elif n < len(self._held):
            lc = self.llama_cpp
            if not lc.llama_memory_seq_rm(lc.llama_get_memory(self.ctx), 0, n, -1):
                self.reset_cache()
                return 0
            self._held = self._held[:n]
        return n

    def _token_stream(self, prompt_ids: list[int], config: GenerationConfig) -> Iterator[int]:
        lc = self.llama_cpp
        lc.llama_perf_context_reset(self.ctx)
        self._reused = self._reuse(prompt_ids)
        sampler = self._sampler(config, prompt_ids)
        try:
            self._decode(prompt_ids[self._reused:])
            for n in range(config.max_new_tokens):
                tok = lc.llama_sampler_sample(sampler, self.ctx, -1)
                yield tok
                if n + 1 < config.max_new_tokens:
                    self._decode([tok])  # only when the caller asks for the next token
        finally:
            lc.llama_sampler_free(sampler)
            p = lc.llama_perf_context(self.ctx)
            self._engine = {"prefill_ms": p.t_p_eval_ms, "prompt_tokens_evaluated": p.n_p_eval,
                            "decode_tps": p.n_eval / (p.t_eval_ms / 1000) if p.t_eval_ms else 0.0}

    def _engine_figures(self) -> dict:
        return dict(self._engine)

    def close(self) -> None:
        self.llm.close()
