"""llama.cpp through llama-cpp-python: a GGUF file, streaming token ids from Llama.generate."""

from __future__ import annotations

import os
from typing import Iterator

from .base import GenerationConfig, Runtime


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
        probe = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        arch = probe.metadata.get("general.architecture", "")
        trained = int(probe.metadata.get(f"{arch}.context_length", n_ctx))
        probe.close()
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=min(n_ctx, trained), n_batch=n_batch,
                                   n_threads=n_threads or os.cpu_count(), type_k=types[kv_cache],
                                   type_v=types[kv_cache], verbose=False)
        tok = from_llama(self.llm)
        fmt = families.chat_format(name_or_path=model_name or str(path), template=tok.chat_template)
        super().__init__(tok, fmt, self.llm.n_ctx(), model_name or str(path))
        self._engine: dict = {}

    def _token_stream(self, prompt_ids: list[int], config: GenerationConfig) -> Iterator[int]:
        lc = self.llama_cpp
        if config.seed is not None:
            self.llm.set_seed(config.seed)
        lc.llama_perf_context_reset(self.llm._ctx.ctx)
        kw = dict(temp=0.0 if config.greedy else config.temperature, top_k=config.top_k if not config.greedy else 1,
                  top_p=config.top_p, min_p=0.0, repeat_penalty=config.repetition_penalty)
        try:
            for n, tok in enumerate(self.llm.generate(prompt_ids, reset=True, **kw)):
                yield tok
                if n + 1 >= config.max_new_tokens:
                    return
        finally:
            p = lc.llama_perf_context(self.llm._ctx.ctx)
            self._engine = {"prefill_ms": p.t_p_eval_ms, "prompt_tokens": p.n_p_eval,
                            "decode_tps": p.n_eval / (p.t_eval_ms / 1000) if p.t_eval_ms else 0.0}

    def _engine_figures(self) -> dict:
        return dict(self._engine)

    def close(self) -> None:
        self.llm.close()
