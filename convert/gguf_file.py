"""The GGUF file itself: glmkit's metadata (hyperparameters from the family's real config fields, GLM-4's
tokenizer and stop tokens, the chat template), gguf-py's tensor names, and the source's tensors streamed into it in
one planned order. `write` makes the unquantized types; gguf_stream.py the quantized ones from the same header and
plan; `rewrite` gives another tool's GGUF (AutoRound's) this metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from glmkit.common import progress
from glmkit.glm4 import families
from glmkit.glm4.errors import GlmkitError
from glmkit.glm4.messages import find_template

from . import gguf_types

# family → llama.cpp architecture. glm and chatglm both load as llama.cpp's chatglm.
ARCHS = {"glm4": "GLM4", "glm": "CHATGLM", "chatglm": "CHATGLM"}
# llama.cpp's GLM-4 pre-tokenizer types share the regex; "glm4" also takes a pre-token whole when it is in the
# vocabulary (tiktoken's rule, tokenizer.json's ignore_merges), "chatglm-bpe" does not.
PRE_TYPES = {True: "glm4", False: "chatglm-bpe"}
ROWS_PER_CHUNK = 2048


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


def write(path: Path, ckpt, config: dict, tok_dir: Path, outtype: str, spec: str, quiet: bool) -> None:
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


def rewrite(src: Path, path: Path, ckpt, config: dict, tok_dir: Path, spec: str) -> None:
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
