"""llama.cpp through llama-cpp-python: a GGUF file, decoded with llama.cpp's C API (llama_decode, its sampler chain)."""

from __future__ import annotations

import os
from typing import Iterator

from .base import GenerationConfig, Runtime


def _trained_context(path) -> int | None:
    """The file's context length, read by gguf-py (a vocab-only llama.cpp probe warns n_ctx_train = 0)."""
    from gguf import GGUFReader

    from glmkit.convert import GlmkitError

    try:
        fields = GGUFReader(str(path)).fields
    except (ValueError, IndexError, KeyError, OSError) as e:
        raise GlmkitError(f"{path}: truncated or corrupt GGUF ({e.__class__.__name__}); re-create it with "
                          "glm-convert SRC --to gguf") from None
    arch = fields["general.architecture"].contents() if "general.architecture" in fields else ""
    field = fields.get(f"{arch}.context_length")
    return int(field.contents()) if field else None


class LlamaCppRuntime(Runtime):
    backend = "llamacpp"

    def __init__(self, path, n_ctx: int = 4096, n_threads: int | None = None, n_batch: int = 512,
                 kv_cache: str = "f16", model_name: str | None = None):
        import llama_cpp

        from glmkit.convert import GlmkitError, families

        from .tokenizer import from_llama

        types = {"f16": llama_cpp.GGML_TYPE_F16, "f32": llama_cpp.GGML_TYPE_F32}
        if kv_cache not in types:
            raise GlmkitError(f"kv_cache {kv_cache}: choose f16 or f32")
        self.llama_cpp = llama_cpp
        self.n_batch = n_batch
        trained = _trained_context(path) or n_ctx
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=min(n_ctx, trained), n_batch=n_batch,
                                   n_threads=n_threads or os.cpu_count(), type_k=types[kv_cache],
                                   type_v=types[kv_cache], verbose=False)
        tok = from_llama(self.llm)
        fmt = families.chat_format(name_or_path=model_name or str(path), template=tok.chat_template)
        super().__init__(tok, fmt, self.llm.n_ctx(), model_name or str(path))
        self._engine: dict = {}

    def _sampler(self, config: GenerationConfig):
        """llama.cpp's own sampler chain, in C: llama-cpp-python's Llama.generate samples in Python over the whole
        151,552-token vocabulary every step, which costs more than the forward pass of a small model."""
        lc = self.llama_cpp
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if config.repetition_penalty != 1.0:
            n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.llm._model.model))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_penalties(
                n_vocab, 64, config.repetition_penalty, 0.0, 0.0))
        if config.greedy:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return chain
        if config.top_k:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(config.top_k))
        if config.top_p < 1.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(config.top_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(config.temperature))
        seed = config.seed if config.seed is not None else lc.LLAMA_DEFAULT_SEED
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        return chain

    def _decode(self, tokens: list[int]) -> None:
        lc = self.llama_cpp
        for a in range(0, len(tokens), self.n_batch):
            chunk = tokens[a:a + self.n_batch]
            arr = (lc.llama_token * len(chunk))(*chunk)
            if lc.llama_decode(self.llm._ctx.ctx, lc.llama_batch_get_one(arr, len(chunk))) != 0:
                raise RuntimeError("llama_decode failed (context full?)")

    def _token_stream(self, prompt_ids: list[int], config: GenerationConfig) -> Iterator[int]:
        lc = self.llama_cpp
        ctx = self.llm._ctx.ctx
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)  # no hidden prefix reuse: honest, repeatable timing
        lc.llama_perf_context_reset(ctx)
        sampler = self._sampler(config)
        try:
            self._decode(prompt_ids)
            for n in range(config.max_new_tokens):
                tok = lc.llama_sampler_sample(sampler, ctx, -1)
                yield tok
                if n + 1 < config.max_new_tokens:
                    self._decode([tok])  # only when the caller asks for the next token
        finally:
            lc.llama_sampler_free(sampler)
            p = lc.llama_perf_context(ctx)
            self._engine = {"prefill_ms": p.t_p_eval_ms, "prompt_tokens": p.n_p_eval,
                            "decode_tps": p.n_eval / (p.t_eval_ms / 1000) if p.t_eval_ms else 0.0}

    def _engine_figures(self) -> dict:
        return dict(self._engine)

    def close(self) -> None:
        self.llm.close()
