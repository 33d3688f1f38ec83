"""`--to gguf`: a llama.cpp model file written with gguf-py, verified through llama-cpp-python.

Tensors stream from the memory-mapped safetensors one at a time into GGUFWriter (peak memory is about one tensor,
not the model). Names come from gguf-py's own tensor-name maps. Hyperparameters are read from the config fields
the family really has (llama.cpp's converter reads ChatGLM names for GlmForCausalLM and gets context length,
rope base and eps wrong). The tokenizer is accepted by its pre-tokenizer regex, not by a hash, so fine-tunes with
added tokens convert. f32/f16/bf16 are written here; every quantized type takes llama.cpp's own per-tensor choices
and quantizer, tensor by tensor as the source streams (gguf_stream.py), with an importance matrix computed on the
source block by block (imatrix.py) and overrides when asked; nothing full-precision is staged on disk.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from glmkit.common import manifest, progress
from glmkit.common.paths import default_output
from glmkit.glm4 import families
from glmkit.glm4.errors import GlmkitError
from glmkit.glm4.messages import find_template

from . import gguf_types, preflight
from .gguf_types import Override
from .pipeline import Job, Target, convert

# family → llama.cpp architecture. glm and chatglm both load as llama.cpp's chatglm.
ARCHS = {"glm4": "GLM4", "glm": "CHATGLM", "chatglm": "CHATGLM"}
# llama.cpp's GLM-4 pre-tokenizer types share the regex; "glm4" also takes a pre-token whole when it is in the
# vocabulary (tiktoken's rule, tokenizer.json's ignore_merges), "chatglm-bpe" does not.
PRE_TYPES = {True: "glm4", False: "chatglm-bpe"}
ROWS_PER_CHUNK = 2048
CALIBRATION_CHUNKS = 16  # × 512 tokens for an importance matrix
METHODS = ("rtn", "autoround")  # llama.cpp's own rounding (with an importance matrix if asked), or AutoRound's


def _plan_type(name: str, shape: tuple[int, ...], outtype: str):
    """GGML type of one tensor: 1-D tensors (norms, biases) stay f32, as llama.cpp expects."""
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as Q

    t = gguf_types.get(outtype)
    if len(shape) == 1:
        return Q.F32
    if t.writer == "llama.cpp":
        return Q.F16
    q = Q[t.ftype.split("_", 1)[1]]
    block = GGML_QUANT_SIZES[q][0]
    return q if shape[-1] % block == 0 else Q.F16  # rows that blocks do not divide stay f16


def _encode(t, qtype) -> np.ndarray:
    """torch tensor → numpy bytes of `qtype`, in row chunks so fp32 scratch stays small."""
    import torch
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    if qtype == Q.F32:
        return t.to(torch.float32).numpy()
    if qtype == Q.F16:
        return t.to(torch.float16).numpy()
    flat = t.reshape(-1, t.shape[-1])
    out = np.empty(quants.quant_shape_to_byte_shape(tuple(flat.shape), qtype), dtype=np.uint8)
    for a in range(0, flat.shape[0], ROWS_PER_CHUNK):
        out[a:a + ROWS_PER_CHUNK] = quants.quantize(flat[a:a + ROWS_PER_CHUNK].to(torch.float32).numpy(), qtype)
    return out.reshape(*t.shape[:-1], out.shape[-1])


def tensor_stream(ckpt, config: dict, meta: bool) -> Iterator:
    """(hf_name, tensor) in glm/glm4 layout; with meta=True only shapes (no data read)."""
    from glmkit.sources.remap import chatglm_to_glm_tensors

    if meta:
        import torch

        dtypes = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
        tensors: Iterator = ((n, torch.empty(shape, dtype=dtypes.get(dt, torch.float32), device="meta"))
                             for n, shape, dt in ckpt.tensor_meta())
    else:
        tensors = ckpt.tensors()
    if not ckpt.family.native:
        tensors = chatglm_to_glm_tensors(tensors, config)
    return tensors


def gguf_names(ckpt, config: dict) -> list[str]:
    """The GGUF names of the source's tensors, from gguf-py's map (no data read)."""
    import gguf

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[ARCHS[ckpt.family.name]], config["num_hidden_layers"])
    return [name_map.get_name(n, try_suffixes=(".weight", ".bias")) or n for n, _ in tensor_stream(ckpt, config, True)]


def _vocab(tok_dir: Path, vocab_size: int):
    """Tokens by id (gaps padded as llama.cpp does), token types, merges, and special-token ids."""
    from gguf import TokenType

    from glmkit.sources.tokenizer import check_pretokenizer

    data = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    check_pretokenizer(data)
    if (data.get("model") or {}).get("type") != "BPE":
        raise GlmkitError("tokenizer.json: not a BPE tokenizer; GLM-4 tokenizers are byte-level BPE")
    by_id: dict[int, tuple[str, int]] = {i: (s, TokenType.NORMAL) for s, i in data["model"]["vocab"].items()}
    for t in data.get("added_tokens", []):
        by_id[t["id"]] = (t["content"], TokenType.CONTROL if t.get("special") else TokenType.USER_DEFINED)
    n = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(n):
        s, ty = by_id.get(i, (f"[PAD{i}]", TokenType.UNUSED))
        tokens.append(s)
        types.append(ty)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    ids = {s: i for i, (s, _) in by_id.items()}
    families.special_token_ids(ids)  # refuses a tokenizer without GLM-4's special tokens
    return tokens, types, merges, ids, bool(data["model"].get("ignore_merges"))


def _header(path: Path, ckpt, config: dict, tok_dir: Path, file_type, spec: str):
    """A GGUFWriter holding glmkit's metadata for this model (hyperparameters from the family's real config fields,
    GLM-4's tokenizer and stop tokens, the chat template), and the tensor-name map; no tensors yet."""
    import gguf

    arch_key = ARCHS[ckpt.family.name]
    arch = gguf.MODEL_ARCH[arch_key]
    n_layers = config["num_hidden_layers"]
    name_map = gguf.get_tensor_name_map(arch, n_layers)
    w = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    w.add_name(Path(spec).name if not spec.startswith("synthetic:") else spec)
    w.add_context_length(families.context_length(config))
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_block_count(n_layers)
    w.add_head_count(config["num_attention_heads"])
    w.add_head_count_kv(config["num_key_value_heads"])
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    w.add_rope_dimension_count(int(head_dim * config.get("partial_rotary_factor", families.PARTIAL_ROTARY_FACTOR)))
    w.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    scaling = config.get("rope_scaling") or {}
    if (scaling.get("rope_type") or scaling.get("type")) == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(scaling["factor"]))
        w.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))
    w.add_file_type(file_type)

    tokens, types, merges, ids, ignore_merges = _vocab(tok_dir, config["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE_TYPES[ignore_merges])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    # eos ends text, eot ends a turn (<|user|>), eom ends on a tool call (<|observation|>): all three stop.
    # bos is <|endoftext|> and never added, so the chat template's literal [gMASK]<sop> opens every prompt.
    w.add_eos_token_id(ids[families.EOS_TOKEN])
    w.add_bos_token_id(ids[families.EOS_TOKEN])
    w.add_unk_token_id(ids[families.EOS_TOKEN])
    w.add_pad_token_id(ids[families.PAD_TOKEN])
    w.add_eot_token_id(ids[families.USER_TOKEN])
    if families.OBSERVATION_TOKEN in ids:
        w.add_eom_token_id(ids[families.OBSERVATION_TOKEN])
    w.add_add_bos_token(False)
    template = find_template(tok_dir, config=config, name=spec)  # GLM-4's own where the source has none
    if template:
        w.add_chat_template(template)
    return w, name_map


def header_with_plan(path: Path, ckpt, config: dict, tok_dir: Path, outtype: str, file_type, spec: str,
                     types: dict[str, str] | None = None):
    """A GGUFWriter at `path` with glmkit's header and the tensor table written, and the plan its data must follow:
    [(hf_name, gguf_name, GGML type, bytes)] in the source's streaming order. `types`: GGUF name → GGML type chosen
    elsewhere (llama.cpp's dry run, gguf_stream.py); else `_plan_type` for an unquantized `outtype`."""
    import gguf

    w, name_map = _header(path, ckpt, config, tok_dir, file_type, spec)
    if types is not None:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)  # as llama_model_quantize writes it
    plan = []
    for hf_name, meta in tensor_stream(ckpt, config, meta=True):
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise GlmkitError(f"{hf_name}: no GGUF name for this tensor in gguf-py's {ARCHS[ckpt.family.name]} map; "
                              "the checkpoint has tensors glmkit does not know")
        qtype = gguf.GGMLQuantizationType[types[name].upper()] if types is not None \
            else _plan_type(name, tuple(meta.shape), outtype)
        byte_shape = gguf.quants.quant_shape_to_byte_shape(tuple(meta.shape), qtype) \
            if qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else tuple(meta.shape)
        dtype = {gguf.GGMLQuantizationType.F32: np.float32,
                 gguf.GGMLQuantizationType.F16: np.float16}.get(qtype, np.uint8)
        nbytes = int(np.prod(byte_shape)) * np.dtype(dtype).itemsize
        w.add_tensor_info(name, byte_shape, np.dtype(dtype), nbytes, raw_dtype=qtype)
        plan.append((hf_name, name, qtype, nbytes))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    return w, plan


def _write(path: Path, ckpt, config: dict, tok_dir: Path, outtype: str, spec: str, quiet: bool) -> None:
    """The checkpoint's tensors streamed into a GGUF of an unquantized type (f32/f16/bf16)."""
    import gguf

    t = gguf_types.get(outtype)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if t.writer == "llama.cpp" else gguf.LlamaFileType[t.ftype]
    w, plan = header_with_plan(path, ckpt, config, tok_dir, outtype, file_type, spec)
    with progress.task(f"{ckpt.family.name} → gguf {outtype}", total=sum(p[3] for p in plan), quiet=quiet) as adv:
        for (hf_name, tensor), (want, _, qtype, nbytes) in zip(tensor_stream(ckpt, config, meta=False), plan):
            if hf_name != want:  # the header was planned in this order: another order would put bytes astray
                raise GlmkitError(f"{hf_name}: tensors came in another order than planned ({want}); the "
                                  "checkpoint changed while converting — convert it again")
            data = _encode(tensor, qtype)
            w.write_tensor_data(data)
            adv(nbytes)
            del data, tensor
    w.close()


def _rewrite(src: Path, path: Path, ckpt, config: dict, tok_dir: Path, spec: str) -> None:
    """Another tool's GGUF (AutoRound's) with glmkit's metadata: its tensors copied byte for byte, its header,
    vocabulary and stop tokens replaced by what `_header` writes. Refuses a file whose tensor names are not the
    ones glmkit would write for this checkpoint."""
    from gguf import GGUFReader

    reader = GGUFReader(src)
    w, name_map = _header(path, ckpt, config, tok_dir, reader.fields["general.file_type"].contents(), spec)
    want = {name_map.get_name(n, try_suffixes=(".weight", ".bias")) for n, _ in tensor_stream(ckpt, config, True)}
    got = {t.name for t in reader.tensors}
    if got != want:
        raise GlmkitError(f"{src.name}: its tensors are not this checkpoint's (missing {sorted(want - got)[:3]}, "
                          f"unexpected {sorted(got - want)[:3]})")
    for t in reader.tensors:
        w.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in reader.tensors:
        w.write_tensor_data(np.asarray(t.data))
    w.close()


class GGUF(Target):
    kind = "gguf"

    def refuse_vision(self, src: str) -> GlmkitError:
        return GlmkitError(f"{src} is GLM-4V, a vision model: llama.cpp has no path for its vision tower "
                           "(mtmd's GLM4V projector is GLM-4.1V's; its cogvlm graph lacks GLM-4V's 2×2 downsample "
                           "and shared image positions), so a GGUF would lose the images; no --to gguf for GLM-4V")
    is_dir = False

    def __init__(self, outtype: str, rope_scaling: str | None, imatrix: str | None = None,
                 tensor_types: tuple[str, ...] = (), save_imatrix: str | Path | None = None,
                 calibration_chunks: int = CALIBRATION_CHUNKS, max_size: str | int | None = None,
                 memory: str | int | None = None, n_ctx: int = 4096, method: str = "rtn", iters: int | None = None,
                 dataset: str | None = None):
        self.outtype, self.rope_scaling, self.imatrix_spec = outtype, rope_scaling, imatrix
        self.tensor_types, self.save_imatrix = tensor_types, save_imatrix
        self.calibration_chunks, self.max_size = calibration_chunks, max_size
        self.overrides: list[Override] = []
        self.max_bytes: int | None = None
        self.memory, self.n_ctx = memory, n_ctx
        self.budget: dict | None = None
        self.method, self.iters, self.dataset = method, iters, dataset

    def validate(self) -> None:
        t = gguf_types.get(self.outtype)
        if self.method not in METHODS:
            raise GlmkitError(f"--method {self.method}: choose one of {', '.join(METHODS)}")
        if self.method == "autoround":
            from . import autoround

            self.iters = autoround.DEFAULT_ITERS if self.iters is None else self.iters
            autoround.check(self.outtype, self.iters)
            used = [f for f, v in (("--imatrix", self.imatrix_spec), ("--tensor-type", self.tensor_types),
                                   ("--max-size", self.max_size), ("--memory", self.memory)) if v]
            if used:
                raise GlmkitError(f"--method autoround tunes the rounding itself; drop {used[0]}")
        elif self.iters is not None:
            raise GlmkitError("--iters is AutoRound's: add --method autoround")
        self.overrides = [Override.parse(x) for x in self.tensor_types]
        if self.max_size is not None or self.memory is not None:
            from .sizes import parse_size

            limits = [parse_size(self.max_size, "--max-size")] if self.max_size is not None else []
            if self.memory is not None:
                limits.append(parse_size(self.memory, "--memory"))  # narrowed to the weights' share in preflight
                if self.n_ctx < 1:
                    raise GlmkitError(f"--n-ctx {self.n_ctx}: give at least 1 token")
            self.max_bytes = min(limits)
            if self.overrides:
                raise GlmkitError("--max-size and --memory choose the per-tensor types themselves; drop --tensor-type")
            self.imatrix_spec = self.imatrix_spec or "embedded"  # data-aware by default when choosing
        elif t.writer != "llama.cpp" and (self.imatrix_spec or self.overrides):
            raise GlmkitError(f"--outtype {self.outtype} is not quantized: --imatrix and --tensor-type apply to "
                              "quantized types (q8_0 … iq1_s)")
        elif t.needs_imatrix and not self.imatrix_spec:
            raise GlmkitError(gguf_types.imatrix_hint(f"--outtype {self.outtype}"))
        if self.calibration_chunks < 1:
            raise GlmkitError(f"--calibration-chunks {self.calibration_chunks}: give at least 1")
        if self.save_imatrix and not self.imatrix_spec:
            raise GlmkitError("--save-imatrix writes the importance matrix glmkit computes: add --imatrix embedded "
                              "or --imatrix TEXT_FILE")

    def default_output(self, src: str) -> Path:
        return Path(f"{default_output(src, 'max-size' if self.max_bytes else self.outtype)}.gguf")

    def preflight(self, job: Job) -> None:
        parameters, t = job.parameters, gguf_types.get(self.outtype)
        if self.memory is not None:
            from .recipe import memory_budget

            self.budget = memory_budget(job.ckpt, self.memory, self.n_ctx)
            self.max_bytes = min(self.max_bytes or self.budget["weights"], self.budget["weights"])
        out = (parameters * 2 if self.max_bytes else  # --max-size: a few candidates at once, at most f16's size
               preflight.output_bytes(parameters, self.outtype) if t.writer == "gguf-py"
               else int(parameters * t.bpw / 8 * 1.25) + 2**26)  # llama.cpp keeps some tensors higher
        preflight.check_disk({job.out: out
                              + (0 if job.ckpt.family.native else job.source_bytes)},  # remapped reference
                             f"converting to GGUF {self.outtype}")
        if job.ckpt.pickled:
            raise GlmkitError("--to gguf streams safetensors; convert pickled weights first with --to hf "
                              "--allow-pickle")

    def _imatrix(self, spec: str, job: Job):
        """(per-column weights, manifest record) from the user's file, or computed on the source block by block
        over calibration text (never the held-out text verification scores)."""
        import gguf

        from . import calibration
        from . import imatrix as im

        if Path(spec).suffix in (".gguf", ".dat"):
            m = im.load(spec)
            record = {"file": str(spec), "datasets": m.datasets, "chunks": m.chunk_count, "computed": False}
        else:
            source = job.native_dir()
            chunks = calibration.token_chunks(source, spec, 10**6)
            if self.max_bytes and spec == "embedded":  # --max-size scores on the last chunks: keep them unseen
                from .recipe import EVAL_CHUNKS

                chunks = chunks[:-EVAL_CHUNKS]
            chunks = chunks[:self.calibration_chunks]
            arch = gguf.MODEL_ARCH[ARCHS[job.ckpt.family.name]]
            with progress.task("importance matrix (source block by block, calibration text)",
                               total=job.config["num_hidden_layers"], quiet=job.quiet) as adv:
                m = im.from_source(source, chunks, gguf.get_tensor_name_map(arch, job.config["num_hidden_layers"]),
                                   dataset=spec if spec == "embedded" else Path(spec).name, progress=adv)
            record = {"dataset": spec, "chunks": len(chunks), "chunk_tokens": len(chunks[0]), "computed": True}
            if self.save_imatrix:
                im.save(m, self.save_imatrix)
                record["saved_to"] = str(self.save_imatrix)
                progress.say(f"wrote importance matrix {self.save_imatrix}", job.quiet)
        record["entries"] = len(m.sums)
        return m.weights(), record

    def _choose(self, job: Job, streamer, weights: dict | None, settings: dict, tok_dir: Path) -> None:
        """--max-size / --memory: recipes quantized from the stream and measured (recipe.py), the best that fits
        written; where even f16 fits, f16."""
        from . import recipe

        chosen = recipe.choose_gguf(streamer, self.max_bytes or 0, weights, job.native_dir(), job.parameters,
                                    job.stage, quiet=job.quiet)
        settings.update(outtype=chosen.outtype, max_size=chosen.record)
        settings["seconds"]["max_size"] = chosen.record["seconds"]
        if self.budget:
            settings["memory"] = self.budget
        self.outtype, self.overrides = chosen.outtype, chosen.overrides
        if self.overrides:
            settings["tensor_types"] = [str(o) for o in self.overrides]
        if chosen.path:  # the file measured is the file written
            chosen.path.replace(job.tmp)
        else:
            _write(job.tmp, job.ckpt, job.config, tok_dir, "f16", job.src, job.quiet)
        if job.tmp.stat().st_size > (self.max_bytes or 0):  # never: choose_gguf measured it
            raise GlmkitError(f"--max-size: the chosen file is {job.tmp.stat().st_size:,} bytes, over "
                              f"{self.max_bytes:,}; please report this")

    def export(self, job: Job) -> dict:
        from glmkit.sources.remap import chatglm_to_glm_config, write_tokenizer

        ckpt = job.ckpt
        config = dict(ckpt.config) if ckpt.family.native else chatglm_to_glm_config(ckpt.config)
        job.config = config = families.with_yarn(config, self.rope_scaling) if self.rope_scaling else config
        tok_dir = ckpt.path
        if not ckpt.family.native:  # tokenizer.json from the tiktoken file, no remote code
            tok_dir = job.stage / "tok"
            tok_dir.mkdir()
            write_tokenizer(ckpt, tok_dir)
        settings: dict = {"outtype": self.outtype}
        if self.method == "autoround":
            from . import autoround, calibration

            texts = calibration.texts(self.dataset or "embedded", 10 * autoround.NSAMPLES, 4000)
            progress.say(f"quantizing to {self.outtype} with AutoRound ({self.iters} iterations)", job.quiet)
            settings["method"] = autoround.quantize(job.native_dir(), self.outtype, self.iters or 0, texts,
                                                    job.stage / "autoround.gguf", job.stage, job.quiet)
            settings["method"]["dataset"] = self.dataset or "embedded"
            _rewrite(job.stage / "autoround.gguf", job.tmp, ckpt, config, tok_dir, job.src)
        elif gguf_types.get(self.outtype).writer == "llama.cpp" or self.max_bytes:  # streamed: no f16 stage
            from . import gguf_stream

            if self.overrides:  # before any long step: an override that names no tensor is a typo
                gguf_types.check_overrides(self.overrides, gguf_names(ckpt, config),
                                           has_imatrix=bool(self.imatrix_spec))
            steps = settings["seconds"] = {}
            weights = None
            if self.imatrix_spec:
                t = time.perf_counter()
                weights, settings["imatrix"] = self._imatrix(self.imatrix_spec, job)
                steps["imatrix"] = round(time.perf_counter() - t, 1)
            streamer = gguf_stream.Streamer(
                job.stage,
                lambda p, outtype, ftype, types: header_with_plan(p, ckpt, config, tok_dir, outtype, ftype, job.src,
                                                                  types),
                lambda: tensor_stream(ckpt, config, meta=False), label=ckpt.family.name, quiet=job.quiet)
            try:
                if self.max_bytes:
                    self._choose(job, streamer, weights, settings, tok_dir)
                else:
                    if self.overrides:
                        settings["tensor_types"] = [str(o) for o in self.overrides]
                    progress.say(f"quantizing to {self.outtype} with llama.cpp's choices, tensor by tensor"
                                 + (" with the importance matrix" if weights else ""), job.quiet)
                    t = time.perf_counter()
                    types = streamer.write(job.tmp, self.outtype, imatrix=weights, overrides=self.overrides)
                    steps["quantize"] = round(time.perf_counter() - t, 1)
                    settings["types"] = {q: sum(v == q for v in types.values()) for q in sorted(set(types.values()))}
            finally:
                streamer.close()
        else:
            _write(job.tmp, ckpt, config, tok_dir, self.outtype, job.src, job.quiet)
        return {"file": job.out.name, "architecture": ARCHS[ckpt.family.name].lower(),
                "settings": settings, "size_bytes": job.tmp.stat().st_size,
                "file_identity": manifest.file_identity(job.tmp)}

    def verify(self, job: Job):
        from . import verify

        # the source as transformers runs it (a chatglm source remapped), with the same YaRN
        result, record = verify.check(job.native_dir(), job.tmp, self.outtype, parameters=job.parameters,
                                      candidate_bytes=job.tmp.stat().st_size,
                                      gated=job.source.kind != "synthetic", quiet=job.quiet)
        record["tokenizer"] = verify.tokenization(job.ckpt.path, job.tmp)
        progress.say(verify.tokenization_summary(record["tokenizer"], "llama.cpp tokenizer"), job.quiet)
        if result is not None and not result.passed:  # None: the reference cannot fit, skipped
            return record, (f"{result.summary()} for {result.precision}", "try a higher-precision --outtype")
        if not record["tokenizer"]["passed"]:
            return record, (verify.tokenization_summary(record["tokenizer"]),
                            "llama.cpp does not encode like the source's tokenizer")
        return record, None


def to_gguf(src: str, output: str | Path | None = None, *, outtype: str = "f16", verify: bool = True,
            force: bool = False, allow_pickle: bool = False, revision: str | None = None, quiet: bool = False,
            rope_scaling: str | None = None, imatrix: str | None = None, tensor_types: tuple[str, ...] = (),
            save_imatrix: str | Path | None = None, calibration_chunks: int = CALIBRATION_CHUNKS,
            max_size: str | int | None = None, memory: str | int | None = None, n_ctx: int = 4096,
            method: str = "rtn", iters: int | None = None, dataset: str | None = None) -> Path:
    """Write SRC as one GGUF file for llama.cpp; returns its path. The manifest goes beside it (NAME.glmkit.json).
    rope_scaling "yarn:FACTOR" writes YaRN into the file (llama.cpp reads {arch}.rope.scaling.*) and verifies
    against the source run with the same YaRN. imatrix: an importance matrix file (.gguf/.dat), or calibration
    text ("embedded" or a UTF-8 file) to compute one from; tensor_types: llama-quantize's PATTERN=TYPE overrides;
    max_size: the largest file allowed (bytes, or "2.5MB", "4.5GB"): glmkit chooses the type, importance matrix
    and overrides with the best measured quality that fits. memory: what the model may use when it runs, weights plus
    an f16 KV cache of n_ctx tokens plus llama.cpp's working memory; the file gets what is left. method
    "autoround": AutoRound tunes the k-quant rounding over `iters` steps on `dataset` (default embedded)."""
    target = GGUF(outtype, rope_scaling, imatrix, tuple(tensor_types), save_imatrix, calibration_chunks, max_size,
                  memory, n_ctx, method, iters, dataset)
    return convert(target, src, output, rope_scaling=rope_scaling, verify=verify, force=force,
                   allow_pickle=allow_pickle, revision=revision, quiet=quiet)
