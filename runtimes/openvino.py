"""OpenVINO GenAI: openvino_genai.LLMPipeline on CPU, GPU, NPU or AUTO, streaming token ids."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Iterator

from .base import GenerationConfig, Runtime

DEVICES = ("CPU", "GPU", "NPU", "AUTO")
# NPU compiles static shapes: a prompt budget and an answer budget (OpenVINO's NPU guide defaults).
NPU_DEFAULTS = {"MAX_PROMPT_LEN": 1024, "MIN_RESPONSE_LEN": 128}


def available_devices() -> list[str]:
    import openvino as ov

    return list(ov.Core().available_devices)


class OpenVINORuntime(Runtime):
    backend = "openvino"

    def __init__(self, path, device: str = "CPU", cache_dir: str | None = None, model_name: str | None = None,
                 **properties):
        import openvino_genai as ov_genai

        from glmkit.convert import GlmkitError, families

        from .tokenizer import from_hf

        have = available_devices()
        base = device.split(".")[0].split(":")[0].upper()
        if base not in DEVICES or (base != "AUTO" and not any(d.startswith(base) for d in have)):
            raise GlmkitError(f"device {device} is not available on this machine (it has: {', '.join(have)}); "
                              f"pass --device {have[0]}")
        props = dict(properties)
        if base == "NPU":
            props = {**NPU_DEFAULTS, **props}
        if cache_dir:
            props["CACHE_DIR"] = str(cache_dir)
        self.pipe = ov_genai.LLMPipeline(str(path), device, **props)
        self.device = device
        cfg = json.loads((Path(path) / "config.json").read_text())
        tok = from_hf(path)
        fmt = families.chat_format(cfg, model_name or str(path), tok.chat_template)
        context = int(props.get("MAX_PROMPT_LEN", 0) + props.get("MIN_RESPONSE_LEN", 0)) if base == "NPU" \
            else int(cfg.get("max_position_embeddings", 4096))
        super().__init__(tok, fmt, context, model_name or str(path))
        self._engine: dict = {}

    def _gen_config(self, config: GenerationConfig):
        import openvino_genai as ov_genai

        g = ov_genai.GenerationConfig()
        g.max_new_tokens = config.max_new_tokens
        g.do_sample = not config.greedy
        if not config.greedy:
            g.temperature = config.temperature
            g.top_p = config.top_p
            g.top_k = config.top_k or 0
        g.repetition_penalty = config.repetition_penalty
        if config.seed is not None:
            g.rng_seed = config.seed
        g.ignore_eos = config.ignore_eos
        if not config.ignore_eos:
            g.stop_token_ids = set(self.stop_ids)
        return g

    def _token_stream(self, prompt_ids: list[int], config: GenerationConfig) -> Iterator[int]:
        import numpy as np
        import openvino as ov
        import openvino_genai as ov_genai

        q: queue.Queue = queue.Queue()
        cancel = threading.Event()
        done = object()

        class Streamer(ov_genai.StreamerBase):
            def write(self, token):
                for t in token if isinstance(token, (list, tuple)) else [token]:
                    q.put(int(t))
                return ov_genai.StreamingStatus.CANCEL if cancel.is_set() else ov_genai.StreamingStatus.RUNNING

            def end(self):
                pass

        streamer = Streamer()
        box: dict = {}

        def run():
            try:
                box["result"] = self.pipe.generate(ov.Tensor(np.array([prompt_ids], dtype=np.int64)),
                                                   self._gen_config(config), streamer)
            except BaseException as e:  # surfaced in the consumer's thread
                box["error"] = e
            finally:
                q.put(done)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            while (item := q.get()) is not done:
                yield item
        finally:
            cancel.set()
            worker.join()
            if "error" in box:
                raise box["error"]
            pm = getattr(box.get("result"), "perf_metrics", None)
            if pm is not None:
                self._engine = {"ttft_ms": pm.get_ttft().mean, "decode_tps": pm.get_throughput().mean}

    def _engine_figures(self) -> dict:
        return dict(self._engine)
