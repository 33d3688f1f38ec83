"""OpenVINO GenAI: openvino_genai.LLMPipeline on CPU, GPU, NPU or AUTO, streaming token ids.

LLMPipeline keeps the KV cache of the previous call and prefills only what a new prompt adds to it (its own
prefix reuse), so a chat's next turn costs only its new tokens. With parallel=N the model runs in openvino-genai's
ContinuousBatchingPipeline instead: paged KV with prefix caching, every active generation in each step. Both take
openvino-genai's own speculative decoding (prompt lookup, or a draft IR in a pipeline of its own).
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from glmkit.glm4 import families
from glmkit.glm4.errors import GlmkitError

from .base import Runtime
from .batching import Scheduler
from .capabilities import SPECULATIVE, Capabilities
from .context import default_context, kv_bytes_per_token
from .kv import HeldKV
from .speculative import PROMPT_LOOKUP, Speculation, same_vocabulary
from .types import EngineStats, GenerationConfig

CAPABILITIES = Capabilities(
    constrained=True, penalties=True, kv_cache_types=("f16", "f32", "u8", "q8_0", "bf16"),
    kv_cache_reduced=("f16", "u8"), batching=True, devices=("CPU", "GPU", "NPU", "AUTO"),
    options=("n_ctx", "threads", "prefix_cache", "dtype", "kv_cache", "cache_dir", "parallel", *SPECULATIVE),
    properties=True)
DEVICES = CAPABILITIES.devices
# NPU compiles static shapes: a prompt budget and an answer budget (OpenVINO's NPU guide defaults).
NPU_DEFAULTS = {"MAX_PROMPT_LEN": 1024, "MIN_RESPONSE_LEN": 128}
KV_TYPES = {"f16": "f16", "f32": "f32", "u8": "u8", "q8_0": "u8", "bf16": "bf16"}
DTYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def ir_vocabulary(path) -> list[str]:
    """Every token of an IR's tokenizer.json by id (what a draft must share with its model)."""
    from tokenizers import Tokenizer

    try:
        vocab = Tokenizer.from_file(str(Path(path) / "tokenizer.json")).get_vocab(with_added_tokens=True)
    except Exception:  # tokenizers raises its own Exception type for a missing or corrupt file
        raise GlmkitError(f"{path}: cannot read its tokenizer.json; re-convert it with glm-convert") from None
    out = [""] * (max(vocab.values()) + 1)
    for text, i in vocab.items():
        out[i] = text
    return out


def available_devices() -> list[str]:
    import openvino as ov

    return list(ov.Core().available_devices)


def _paged_kv_matches(kv_cache: str, dtype: str | None) -> None:
    """The CPU's paged attention (batching, speculation) keeps an f32 or bf16 cache only in the precision it
    computes in; OpenVINO would fail at the first request with "expect kvcache type …"."""
    import openvino as ov

    compute = DTYPES[dtype] if dtype else ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    if compute != KV_TYPES[kv_cache]:
        want = {"f32": "float32", "bf16": "bfloat16"}[KV_TYPES[kv_cache]]
        raise GlmkitError(f"kv_cache {kv_cache} with batching or speculative decoding needs the CPU to compute in "
                          f"{KV_TYPES[kv_cache]} (it computes in {compute}): add dtype {want}, or take kv_cache f16 "
                          "or u8")


class OpenVINORuntime(Runtime):
    backend = "openvino"
    capabilities = CAPABILITIES

    def __init__(self, path, device: str = "CPU", cache_dir: str | None = None, n_ctx: int | None = None,
                 threads: int | None = None, kv_cache: str | None = None, dtype: str | None = None,
                 prefix_cache: bool = True, model_name: str | None = None, parallel: int = 1,
                 speculative: str | None = None, draft: str | None = None, draft_tokens: int | None = None,
                 ngram_size: int | None = None, **properties):
        import openvino_genai as ov_genai

        from .tokenizer import from_hf

        have = available_devices()
        base = device.split(".")[0].split(":")[0].upper()
        if base not in DEVICES or (base != "AUTO" and not any(d.startswith(base) for d in have)):
            raise GlmkitError(f"device {device} is not available on this machine (it has: {', '.join(have)}); "
                              f"pass --device {have[0]}")
        if kv_cache and kv_cache not in KV_TYPES:
            raise GlmkitError(f"kv_cache {kv_cache}: choose one of {', '.join(KV_TYPES)}")
        if dtype and dtype not in DTYPES:
            raise GlmkitError(f"dtype {dtype}: choose one of {', '.join(DTYPES)}")
        if parallel < 1 or (parallel > 1 and base == "NPU"):
            raise GlmkitError(f"parallel {parallel}: give 1 or more (the NPU runs one generation at a time)")
        props = dict(properties)
        if base == "NPU":
            props = {**NPU_DEFAULTS, **props}
        if cache_dir:  # compiled-model cache: a second start skips compilation (NPU/GPU above all)
            props["CACHE_DIR"] = str(cache_dir)
        if threads:
            props["INFERENCE_NUM_THREADS"] = int(threads)
        if kv_cache is None and base == "CPU" and (speculative or draft):
            # speculation verifies several tokens a pass, and the CPU's default cache for it (u8) makes those
            # passes slow enough to lose what speculation gains (docs/runtimes.md); an f16 cache keeps it
            kv_cache = "f16"
        #: the KV-cache type asked of the engine (None: the engine's own default)
        self.kv_cache = kv_cache
        if kv_cache:
            props["KV_CACHE_PRECISION"] = KV_TYPES[kv_cache]
        if dtype:
            props["INFERENCE_PRECISION_HINT"] = DTYPES[dtype]
        self.prefix_cache = prefix_cache
        self.device = device
        self.speculation = Speculation.from_options(speculative, draft, draft_tokens, ngram_size)
        if base == "CPU" and (parallel > 1 or self.speculation) and kv_cache in ("f32", "bf16"):
            _paged_kv_matches(kv_cache, dtype)
        if self.speculation and self.speculation.draft:
            if not (Path(self.speculation.draft) / "openvino_model.xml").is_file():
                raise GlmkitError(f"draft {self.speculation.draft}: an OpenVINO model takes an OpenVINO IR draft; "
                                  "convert it with glm-convert DRAFT --to openvino")
            same_vocabulary(ir_vocabulary(path), ir_vocabulary(self.speculation.draft), str(path),
                            self.speculation.draft)
        if self.speculation:  # openvino-genai's own: a draft model in its own pipeline, or prompt lookup
            if self.speculation.kind == PROMPT_LOOKUP:
                props["prompt_lookup"] = True
            else:
                props["draft_model"] = ov_genai.draft_model(self.speculation.draft, device)
        cfg = json.loads((Path(path) / "config.json").read_text())
        heads = cfg.get("num_attention_heads", 1)
        shape = (cfg.get("num_hidden_layers", 0), cfg.get("num_key_value_heads", heads),
                 cfg.get("head_dim") or cfg.get("hidden_size", 0) // heads)
        kv_type = KV_TYPES.get(kv_cache or "f16", "f16")  # the CPU plugin's default cache is f16
        context = default_context(families.context_length(cfg) or 4096, n_ctx, kv_type, *shape, parallel)
        if parallel == 1:
            #: the openvino_genai.LLMPipeline (parallel=N: ContinuousBatchingPipeline), for direct use of its API
            self.pipe = ov_genai.LLMPipeline(str(path), device, **props)
        else:
            sc = ov_genai.SchedulerConfig()
            sc.max_num_seqs = parallel
            sc.enable_prefix_caching = prefix_cache
            sc.dynamic_split_fuse = True  # a long prompt is prefilled in chunks between the others' decode steps
            sc.max_num_batched_tokens = 256
            # the paged KV: every sequence's whole context, in whole GB (openvino-genai's unit)
            sc.cache_size = max(1, math.ceil(kv_bytes_per_token(*shape, kv_type) * context * parallel / 2**30))
            self.pipe = ov_genai.ContinuousBatchingPipeline(str(path), sc, device, props)
        tok = from_hf(path)
        fmt = families.chat_format(cfg, model_name or str(path), tok.chat_template)
        if base == "NPU":
            context = int(props["MAX_PROMPT_LEN"] + props["MIN_RESPONSE_LEN"])
        super().__init__(tok, fmt, context, model_name or str(path))
        self.kv_shape = shape
        self.kv_bytes_per_token = kv_bytes_per_token(*shape, kv_type)
        # what LLMPipeline's KV holds after the last call (its prompt and answer); it trims and clears by itself
        self.kv = HeldKV(lambda: None)
        self._scheduler = None
        if parallel > 1:
            self.parallel = parallel
            self._scheduler = Scheduler(_Batch(self, parallel), "glmkit-openvino")

    def generation_config(self, config: GenerationConfig):
        """The openvino_genai.GenerationConfig for a glmkit GenerationConfig (GLM-4's stop tokens included)."""
        import openvino_genai as ov_genai

        g = ov_genai.GenerationConfig()
        g.max_new_tokens = config.max_new_tokens
        g.do_sample = not config.greedy
        if not config.greedy:
            g.temperature = config.temperature
            g.top_p = config.top_p
            g.top_k = config.top_k or 0
        g.repetition_penalty = config.repetition_penalty
        g.frequency_penalty = config.frequency_penalty
        g.presence_penalty = config.presence_penalty
        if config.structure is not None:
            from .structure import openvino_config

            g.structured_output_config = openvino_config(config.structure)  # the request's compiled grammar
        if config.seed is not None:
            g.rng_seed = config.seed
        if self.speculation:
            g.num_assistant_tokens = self.speculation.tokens
            if self.speculation.kind == PROMPT_LOOKUP:
                g.max_ngram_size = self.speculation.ngram
        g.ignore_eos = config.ignore_eos
        if not config.ignore_eos:
            g.stop_token_ids = set(self.stop_ids)
        return g

    def reset_cache(self) -> None:
        """openvino-genai has no public reset of LLMPipeline's KV; a one-token generation replaces what it holds."""
        if self._scheduler is not None:  # the batching pipeline frees a request's blocks when it ends
            return
        import numpy as np
        import openvino as ov

        g = self.generation_config(GenerationConfig(max_new_tokens=1, ignore_eos=True))
        self.pipe.generate(ov.Tensor(np.array([[self.tokenizer.special_ids[families.EOS_TOKEN]]], dtype=np.int64)), g)
        self.kv.drop()

    def _reuse(self, prompt_ids: list[int]) -> int:
        """Prompt tokens LLMPipeline will find in its KV: it keeps the previous prompt and answer and prefills
        from the first token that differs (openvino-genai reports no counter of its own)."""
        if not self.prefix_cache:
            self.reset_cache()
            return 0
        return self.kv.shared(prompt_ids)

    def _token_stream(self, prompt_ids: list[int], config: GenerationConfig, stats: EngineStats,
                      image=None) -> Iterator[int]:  # a text model: its prompts carry no image
        if self._scheduler is not None:
            yield from self._scheduler.submit(prompt_ids, config, stats)
            return
        import numpy as np
        import openvino as ov
        import openvino_genai as ov_genai

        q: queue.Queue = queue.Queue()
        cancel = threading.Event()
        done = object()

        writes = [0]

        class Streamer(ov_genai.StreamerBase):
            def write(self, token):
                writes[0] += 1  # with speculation, one write per pass: its kept proposals and the model's token
                for t in token if isinstance(token, (list, tuple)) else [token]:
                    q.put(int(t))
                return ov_genai.StreamingStatus.CANCEL if cancel.is_set() else ov_genai.StreamingStatus.RUNNING

            def end(self):
                pass

        streamer = Streamer()
        box: dict = {}
        stats.reused = self._reuse(prompt_ids)
        answer: list[int] = []

        def run():
            try:
                box["result"] = self.pipe.generate(ov.Tensor(np.array([prompt_ids], dtype=np.int64)),
                                                   self.generation_config(config), streamer)
            except BaseException as e:  # surfaced in the consumer's thread
                box["error"] = e
            finally:
                q.put(done)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            while (item := q.get()) is not done:
                answer.append(item)
                yield item
        finally:
            cancel.set()
            worker.join()
            self.kv.hold(list(prompt_ids) + answer)
            if "error" in box:
                self.kv.drop()
                raise box["error"]
            if self.speculation:  # openvino-genai reports no counts: the kept proposals are what came in bulk
                stats.accepted = max(0, len(answer) - writes[0])  # (how many it proposed, it does not say)
            pm = getattr(box.get("result"), "perf_metrics", None)
            if pm is not None:
                stats.ttft_ms, stats.decode_tps = pm.get_ttft().mean, pm.get_throughput().mean
                stats.prompt_tokens = pm.get_num_input_tokens()

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None


class _Batch:
    """The Batch behind parallel=N (see runtimes/batching.py): ContinuousBatchingPipeline's own requests,
    stepped together; its scheduler admits up to N sequences and prefills long prompts in chunks."""

    def __init__(self, rt: OpenVINORuntime, n: int):
        self.rt, self.n, self.running, self.next_id = rt, n, 0, 0

    def start(self, req) -> bool:
        import numpy as np
        import openvino as ov

        if self.running >= self.n:
            return False
        try:
            req.state = self.rt.pipe.add_request(self.next_id,
                                                 ov.Tensor(np.array([req.prompt_ids], dtype=np.int64)),
                                                 self.rt.generation_config(req.config))
        except RuntimeError as e:  # e.g. a schema its structured output cannot compile
            raise GlmkitError(f"openvino-genai refused the request: {str(e).strip().splitlines()[0][:300]}") from None
        req.stats.reused = None  # its prefix cache hits are not counted (openvino-genai 2026.4)
        self.next_id += 1
        self.running += 1
        return True

    def step(self, active) -> list:
        import openvino_genai as ov_genai

        self.rt.pipe.step()
        # step() holds the GIL for the whole engine step (openvino-genai 2026.4's binding), so every other Python
        # thread — glm-serve's event loop, the streams' workers — waits a step per hand-off; a short pause lets
        # them run between steps (glm-serve at 4 clients: 0.78 → 0.99× the engine in-process, no bursts)
        time.sleep(0.001)
        results = []
        for req in active:
            handle, tokens = req.state, []
            if handle.can_read():
                for output in handle.read().values():
                    tokens += [int(t) for t in output.generated_ids]
            if tokens and self.rt.speculation:  # a step's kept proposals come with the model's own token
                req.stats.accepted = (req.stats.accepted or 0) + len(tokens) - 1
            done = handle.get_status() != ov_genai.GenerationStatus.RUNNING and not handle.can_read()
            if tokens or done:
                results.append((req, tokens, done))
        return results

    def release(self, req) -> None:
        import openvino_genai as ov_genai

        if req.state.get_status() == ov_genai.GenerationStatus.RUNNING:
            req.state.cancel()  # freed at the pipeline's next step
        self.running -= 1
