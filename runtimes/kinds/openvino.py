"""An OpenVINO IR directory of a GLM-4 text model (openvino_model.xml), run by openvino-genai."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from glmkit.glm4.errors import GlmkitError

from ..openvino import KV_TYPES, OpenVINORuntime
from .base import ArtifactKind

# Exact logits: f32 compute, what optimum-intel's OVModelForCausalLM was given when verification ran through it,
# so figures stay comparable with every earlier glmkit.json. No dynamic quantization of activations: the CPU plugin
# turns it on (groups of 32) where the CPU has AVX-512 VNNI or AMX, which moves an int8 IR's KL on one host and
# not on another — the figure must measure the file, on any CPU.
EXACT = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
CHUNK = 128  # tokens per pass when a KV-cache type is measured
# Elementwise ops between a weight Constant and the op that uses it in an IR (decompression subgraphs).
_PASS_THROUGH = {"Convert", "Subtract", "Multiply", "Reshape", "Unsqueeze", "Transpose", "Squeeze"}


def ir_token_ids(path, texts: list[str]) -> list[list[int]]:
    """The IR tokenizer as openvino-genai runs it (plain text: no [gMASK]<sop> added)."""
    import openvino_genai as ov_genai

    tok = ov_genai.Tokenizer(str(path))
    return [[int(i) for i in tok.encode(t, add_special_tokens=False).input_ids.data[0]] for t in texts]


def _feeds_gather(node, depth: int = 6) -> bool:
    """True when a weight Constant only reaches Gather ops (an embedding lookup), through decompression ops."""
    users = [i.get_node() for o in node.outputs() for i in o.get_target_inputs()]
    if not users or depth == 0:
        return False
    return all(u.get_type_name() == "Gather" or (u.get_type_name() in _PASS_THROUGH and _feeds_gather(u, depth - 1))
               for u in users)


def ir_weight_bytes(xml: Path) -> int:
    """Bytes of an IR's weight Constants, embedding lookups left out."""
    import openvino as ov

    total = 0
    for op in ov.Core().read_model(str(xml)).get_ops():
        if op.get_type_name() != "Constant" or op.get_byte_size() < 4096:  # shapes, axes, scalars
            continue
        if not _feeds_gather(op):
            total += op.get_byte_size()
    return total


class OpenVINOText(ArtifactKind):
    name = "openvino"
    backend = "openvino"
    label = "an OpenVINO text model"
    capabilities = OpenVINORuntime.capabilities
    own_chat_path = "openvino-genai LLMPipeline.generate(ChatHistory)"
    XML = "openvino_model.xml"

    def claims(self, path: Path) -> bool:
        return path.is_dir() and (path / self.XML).is_file()

    def check(self, model: str) -> None:
        if not (Path(model) / self.XML).is_file():
            raise GlmkitError(f"{model}: no {self.XML}; convert it with glm-convert {model} --to openvino")

    def open(self, model: str, device: str = "CPU", **options):
        return OpenVINORuntime(model, device=device, model_name=str(model), **options)

    def logits(self, model, ids, kv_cache=None, pixels=None) -> np.ndarray:
        """One forward pass of the stateful IR with OpenVINO's own runtime (what LLMPipeline runs, minus
        sampling)."""
        import openvino as ov

        self.no_image(pixels)
        props = dict(EXACT)
        if kv_cache:
            props["KV_CACHE_PRECISION"] = KV_TYPES[kv_cache]
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(Path(model) / self.XML)), "CPU", props)
        request = compiled.create_infer_request()
        request.reset_state()
        names = {name for port in compiled.inputs for name in port.get_names()}
        # One pass attends to the K/V it just computed, never to the cache; with a cache type to measure, the
        # text goes in chunks, so later chunks read earlier ones from the cache as a chat's next turn does.
        step = CHUNK if kv_cache else len(ids)
        out = []
        for a in range(0, len(ids), step):
            chunk = ids[a:a + step]
            feed = {"input_ids": np.array([chunk], dtype=np.int64),
                    "attention_mask": np.ones((1, a + len(chunk)), dtype=np.int64),
                    "position_ids": np.arange(a, a + len(chunk), dtype=np.int64)[None],
                    "beam_idx": np.zeros(1, dtype=np.int32)}
            request.infer({k: v for k, v in feed.items() if k in names})
            out.append(np.array(request.get_tensor("logits").data[0], dtype=np.float32))
        return np.concatenate(out)

    def token_ids(self, model, texts):
        return ir_token_ids(model, texts)

    def weight_bytes(self, model, runtime=None) -> int:
        return ir_weight_bytes(Path(model) / self.XML)

    @staticmethod
    def raw_stamps(runtime, ids: list[int], gen: int) -> list[float]:
        """LLMPipeline.generate alone, with a callback streamer stamping each token."""
        import openvino as ov
        import openvino_genai as ov_genai

        from ..types import GenerationConfig

        stamps: list[float] = []

        class Stamp(ov_genai.StreamerBase):
            def write(self, token):
                stamps.append(time.perf_counter())
                return ov_genai.StreamingStatus.RUNNING

            def end(self):
                pass

        cfg = runtime.generation_config(GenerationConfig(max_new_tokens=gen, ignore_eos=True))
        start = time.perf_counter()
        runtime.pipe.generate(ov.Tensor(np.array([ids], dtype=np.int64)), cfg, Stamp())
        runtime.reset_cache()  # the pipeline's KV now holds this prompt, not what glmkit's runtime last sent
        return [start] + stamps

    @staticmethod
    def own_chat(runtime, model: str):
        """openvino-genai's own chat path: ChatHistory through a second LLMPipeline on the same IR (it keeps
        the previous KV)."""
        import openvino_genai as ov_genai

        from ..types import GenerationConfig

        pipe = ov_genai.LLMPipeline(str(model), runtime.device)

        def turn(messages: list[dict], answer_tokens: int) -> tuple[float, str]:
            stamps: list[float] = []

            def streamer(text):
                stamps.append(time.perf_counter())
                return ov_genai.StreamingStatus.RUNNING

            cfg = runtime.generation_config(GenerationConfig(max_new_tokens=answer_tokens))
            t0 = time.perf_counter()
            out = pipe.generate(ov_genai.ChatHistory(messages), cfg, streamer)
            return ((stamps[0] if stamps else time.perf_counter()) - t0) * 1000, out.texts[0]

        return turn, lambda: None

    @classmethod
    @contextlib.contextmanager
    def pass_timer(cls, model: str, context: int, threads: int | None):
        """One infer of the stateful IR over n tokens after `context` (what openvino-genai runs)."""
        import openvino as ov

        core = ov.Core()
        props = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        compiled = core.compile_model(core.read_model(str(Path(model) / cls.XML)), "CPU", props)
        request = compiled.create_infer_request()
        names = {name for port in compiled.inputs for name in port.get_names()}

        def feed(a: int, n: int) -> dict:
            f = {"input_ids": np.full((1, n), 100, dtype=np.int64),
                 "attention_mask": np.ones((1, a + n), dtype=np.int64),
                 "position_ids": np.arange(a, a + n, dtype=np.int64)[None], "beam_idx": np.zeros(1, dtype=np.int32)}
            return {k: v for k, v in f.items() if k in names}

        def timed(n: int) -> float:
            request.reset_state()
            request.infer(feed(0, context))
            request.infer(feed(context, n))  # once untimed: the first infer of a new shape prepares its kernels
            t0 = time.perf_counter()
            request.infer(feed(context + n, n))
            return (time.perf_counter() - t0) * 1000

        yield timed
