"""A GLM-4V OpenVINO IR directory, run with OpenVINO's own runtime: three models, as glm-convert writes them.

    openvino_vision_embeddings_model   pixel_values [1, 3, S, S] → image_features [1, (S/28)² + 2, hidden]
    openvino_text_embeddings_model     input [1, n] token ids → [1, n, hidden]
    openvino_language_model            stateful: inputs_embeds, attention_mask, position_ids, beam_idx → logits

openvino-genai's VLMPipeline refuses the `chatglm` type and no optimum-intel class knows GLM-4V, so glmkit drives
the three itself: the image's 3 marker tokens are replaced by its features, and positions are the original's
(glm4/vision.py). The stateful language model keeps the conversation's KV across calls.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from glmkit.glm4 import vision
from glmkit.glm4.errors import GlmkitError

from .base import Runtime
from .capabilities import Capabilities
from .kv import HeldKV
from .promptcache import PromptCache
from .types import EngineStats, GenerationConfig

PREFILL_CHUNK = 256  # embeddings per language-model pass (docs/vision.md: peak memory at the 9B shape)
VISION_XML = "openvino_vision_embeddings_model.xml"
TEXT_EMBEDDINGS_XML = "openvino_text_embeddings_model.xml"
LANGUAGE_XML = "openvino_language_model.xml"
FILES = (VISION_XML, TEXT_EMBEDDINGS_XML, LANGUAGE_XML)
# One generation at a time (no batching), no grammar engine: a GLM-4V IR answers text and one image a turn.
CAPABILITIES = Capabilities(penalties=True, kv_cache_types=("f16", "f32", "u8"), devices=("CPU", "GPU"),
                            options=("n_ctx", "threads", "prefix_cache", "dtype", "kv_cache", "image_cache_mb",
                                     "prompt_cache_mb"), images=True)


class FeatureCache:
    """Image features by the image's content, shared by every conversation, least recently used out first: an
    image sent again (OpenAI clients send it with every turn) is never encoded again while it is here."""

    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self.used = self.encoded = self.hits = 0

    def get(self, key: str) -> np.ndarray | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
            self.hits += 1
        return found

    def put(self, key: str, features: np.ndarray) -> None:
        self.encoded += 1
        if features.nbytes > self.limit:
            return
        self.entries[key] = features
        self.used += features.nbytes
        while self.used > self.limit:
            self.used -= self.entries.popitem(last=False)[1].nbytes

    def stats(self) -> dict:
        return {"images_encoded": self.encoded, "image_cache_hits": self.hits, "image_cache_entries":
                len(self.entries), "image_cache_bytes": self.used, "image_cache_limit_bytes": self.limit}


RESTORE_LEAST = 8  # tokens a saved state must share to be put back: an image in them makes even a short one pay


def _tagged(tag: str | None, ids: list[int]) -> list[int]:
    """Token ids behind a first element that stands for the image (no token id is negative), so a saved state
    is only found by a prompt with the same image."""
    return [-1 - (int(tag[:12], 16) if tag else 0), *ids]


def _state_bytes(saved) -> int:
    return sum(a.nbytes for a in saved[0])


class Glm4vIR:
    """The three compiled models of a GLM-4V IR and the splice of an image into a prompt."""

    def __init__(self, path, device: str = "CPU", properties: dict | None = None):
        import openvino as ov

        path = Path(path)
        missing = [f for f in FILES if not (path / f).is_file()]
        if missing:
            raise GlmkitError(f"{path}: not a GLM-4V IR (no {', '.join(missing)}); convert the checkpoint with "
                              "glm-convert SRC --to openvino")
        self.config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        v = self.config["vision_config"]
        self.image_size, self.patch_size = v["image_size"], v["patch_size"]
        self.boi_id = self.config["boi_token_id"]
        core = ov.Core()
        props = dict(properties or {})
        self.vision = core.compile_model(str(path / VISION_XML), device, props)
        self.text = core.compile_model(str(path / TEXT_EMBEDDINGS_XML), device, props)
        self.language = core.compile_model(str(path / LANGUAGE_XML), device, props)
        self.request = self.language.create_infer_request()
        self.held = 0  # embeddings the language model's KV holds

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        return np.asarray(self.vision(pixels)[0], dtype=np.float32)

    def embed(self, ids: list[int]) -> np.ndarray:
        return np.asarray(self.text(np.asarray([ids], dtype=np.int64))[0], dtype=np.float32)

    def splice(self, ids: list[int], features: np.ndarray | None) -> tuple[np.ndarray, list[int]]:
        """The embeddings and positions the language model sees for `ids`: the image's features in place of its
        3 marker tokens, positions as the original gives them; text alone: its own embeddings, sequential."""
        embeds = self.embed(ids)
        if features is None:
            return embeds, list(range(len(ids)))
        b = ids.index(self.boi_id)
        spliced = np.concatenate([embeds[:, :b], features, embeds[:, b + vision.MARKER_TOKENS:]], axis=1)
        return spliced, vision.positions(ids, self.boi_id, self.image_size, self.patch_size)

    def reset(self) -> None:
        self.request.reset_state()
        self.held = 0

    def trim(self, n: int) -> None:
        """Keep the KV of the first n embeddings (states are [batch, kv heads, sequence, head dim])."""
        import openvino as ov

        if n >= self.held:
            return
        if n == 0:
            return self.reset()
        for state in self.request.query_state():
            state.state = ov.Tensor(np.ascontiguousarray(state.state.data[:, :, :n]))
        self.held = n

    def forward(self, embeds: np.ndarray, positions: list[int], last: bool = False) -> np.ndarray:
        """Logits [n, vocab] for n more embeddings after what the KV holds ([vocab], the last row's, with last).
        They go in PREFILL_CHUNK at a time: the CPU plugin keeps buffers sized for the longest pass it has run,
        and an image prompt in one pass holds gigabytes more at the 9B shape for as long as the model is loaded."""
        rows = []
        for i in range(0, embeds.shape[1], PREFILL_CHUNK):
            part = embeds[:, i:i + PREFILL_CHUNK]
            n = part.shape[1]
            self.request.infer({"inputs_embeds": part,
                                "attention_mask": np.ones((1, self.held + n), dtype=np.int64),
                                "position_ids": np.asarray([positions[i:i + n]], dtype=np.int64),
                                "beam_idx": np.zeros(1, dtype=np.int32)})
            self.held += n
            logits = self.request.get_tensor("logits").data[0]
            rows.append(logits[-1:].copy() if last else logits.copy())
        return rows[-1][0] if last else np.concatenate(rows)


class Glm4vRuntime(Runtime):
    """GLM-4V chat: messages with an image part (OpenAI's `image_url` with a data: URL, a local path, a PIL image),
    the same sampling, streaming, stop strings and limits as every backend. The language model's KV is kept
    across calls: a prompt that shares a prefix with what it holds (the next turn of the chat) runs only the rest,
    and an image's features are computed once per image (`images_encoded` counts the encodings)."""

    backend = "openvino"
    capabilities = CAPABILITIES

    def __init__(self, path, device: str = "CPU", n_ctx: int | None = None, threads: int | None = None,
                 kv_cache: str | None = None, dtype: str | None = None, prefix_cache: bool = True,
                 model_name: str | None = None, image_cache_mb: int = 256, prompt_cache_mb: int = 1024):
        from glmkit.glm4 import families

        from .openvino import DTYPES, KV_TYPES, available_devices
        from .tokenizer import from_hf

        have = available_devices()
        if not any(d.startswith(device.upper().split(".")[0]) for d in have):
            raise GlmkitError(f"device {device} is not available on this machine (it has: {', '.join(have)}); "
                              f"pass --device {have[0]}")
        if kv_cache and kv_cache not in self.capabilities.kv_cache_types:
            raise GlmkitError(f"kv_cache {kv_cache}: choose one of {', '.join(self.capabilities.kv_cache_types)}")
        if dtype and dtype not in DTYPES:
            raise GlmkitError(f"dtype {dtype}: choose one of {', '.join(DTYPES)}")
        props = {k: v for k, v in {"INFERENCE_NUM_THREADS": int(threads) if threads else None,
                                   "KV_CACHE_PRECISION": KV_TYPES[kv_cache] if kv_cache else None,
                                   "INFERENCE_PRECISION_HINT": DTYPES[dtype] if dtype else None}.items() if v}
        self.ir = Glm4vIR(path, device, props)
        tok = from_hf(path)
        fmt = families.chat_format(self.ir.config, model_name or str(path), tok.chat_template)
        native = families.context_length(self.ir.config) or 8192
        super().__init__(tok, fmt, min(int(n_ctx), native) if n_ctx else native, model_name or str(path))
        self.prefix_cache = prefix_cache
        self.features = FeatureCache(max(0, int(image_cache_mb)) * 2**20)
        # the language model's KV, tagged with the image whose embeddings it holds; trimmed in embeddings
        self.kv = HeldKV(self.ir.reset, self.ir.trim)
        # other conversations' KV in host RAM: (state tensors, embeddings held, image key) by tagged tokens
        self.saved = PromptCache(max(0, int(prompt_cache_mb)) * 2**20 if prefix_cache else 0, size=_state_bytes)

    @property
    def images_encoded(self) -> int:
        return self.features.encoded

    def image_stats(self) -> dict:
        return self.features.stats()

    def prompt_cache_stats(self) -> dict:
        return self.saved.stats()

    def reset_cache(self) -> None:
        self.kv.drop()

    def image_features(self, image, stats: EngineStats | None = None) -> tuple[str, np.ndarray]:
        from . import images

        img = images.read(image)
        t0 = time.perf_counter()
        features = self.features.get(img.key)
        if features is None:
            features = self.ir.image_features(vision.preprocess(img.rgb, self.ir.image_size))
            self.features.put(img.key, features)
        if stats is not None:
            stats.image_encode_ms = (time.perf_counter() - t0) * 1000
        return img.key, features

    def _save(self) -> None:
        """Keep what the language model holds in host RAM, for when its conversation returns."""
        tokens = _tagged(self.kv.tag if isinstance(self.kv.tag, str) else None, self.kv.ids)
        if self.saved.worth_saving(tokens, length=self.ir.held):
            states = [np.array(s.state.data, copy=True) for s in self.ir.request.query_state()]
            self.saved.put(tokens, (states, self.ir.held, self.kv.tag))

    def _restore(self, tokens: tuple[int, ...], saved, shared: int) -> None:
        import openvino as ov

        states, held, tag = saved
        for state, data in zip(self.ir.request.query_state(), states):
            state.state = ov.Tensor(data)
        self.ir.held = held
        self.kv.hold(tokens[1:], tag=tag)
        self.saved.restored += 1
        self.saved.restored_tokens += shared

    def _switch(self, prompt_ids: list[int], key: str | None, n: int) -> int:
        """The longest prefix among what is held and what was saved: another conversation's saved state is put
        back (what is held saved first), and a prompt that leaves most of what is held keeps it for later."""
        found = (self.saved.best(_tagged(key, prompt_ids), better_than=n + 1, least=RESTORE_LEAST)
                 if self.saved.limit else None)
        if found is None:
            if self.saved.limit and n < len(self.kv) // 2:  # another conversation: this one may come back
                self._save()
            return n
        tokens, saved, shared = found
        if len(self.kv):
            self._save()
        self._restore(tokens, saved, shared - 1)
        return shared - 1

    def _token_stream(self, prompt_ids: list[int], config: GenerationConfig, stats: EngineStats,
                      image=None) -> Iterator[int]:
        from .sampling import Sampler

        key, features = self.image_features(image, stats) if image is not None else (None, None)
        if image is None and self.ir.boi_id in prompt_ids:
            raise GlmkitError("the prompt holds an image marker but no image came with it; send the image")
        n = self._switch(prompt_ids, key, self.kv.shared(prompt_ids, tag=key)) if self.prefix_cache else 0
        b = prompt_ids.index(self.ir.boi_id) if key is not None else None
        if b is not None and n < b + vision.MARKER_TOKENS:
            n = 0  # the image itself would be cut: run it all again (its features are kept)
        image_extra = features.shape[1] - vision.MARKER_TOKENS if features is not None and b is not None else 0
        n = self.kv.keep(n, length=n + image_extra if n else 0)
        if n:  # the KV of the shared prefix kept; positions go on from the unexpanded length
            embeds, positions = self.ir.embed(prompt_ids[n:]), list(range(n, len(prompt_ids)))
        else:
            embeds, positions = self.ir.splice(prompt_ids, features)
        stats.image_embeddings = image_extra  # the prompt's cost in embeddings, and what was reused
        stats.reused = n + image_extra if n and b is not None else n
        self.kv.hold(prompt_ids, tag=key)
        t0 = time.perf_counter()
        logits = self._forward(embeds, positions)
        stats.prefill_ms = (time.perf_counter() - t0) * 1000
        stats.prompt_tokens_evaluated = len(prompt_ids) - n
        sample = Sampler(config, prompt_ids)
        for i in range(config.max_new_tokens):
            tok = sample(logits)
            sample.accept(tok)
            yield tok
            if i + 1 < config.max_new_tokens:  # only when the caller asks for the next token
                logits = self._forward(self.ir.embed([tok]), [len(self.kv)])
                self.kv.extend([tok])

    def _forward(self, embeds: np.ndarray, positions: list[int]) -> np.ndarray:
        """The last row's logits; a pass that fails or is interrupted leaves the KV unknown, so it is dropped and
        the next call starts clean instead of reusing a prefix the state may not hold."""
        try:
            return self.ir.forward(embeds, positions, last=True)
        except (Exception, KeyboardInterrupt):
            self.reset_cache()
            raise
