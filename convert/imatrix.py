"""llama.cpp's importance matrix: computed as llama.cpp computes it, read and written in its file formats.

For each weight matrix the quantizer is told, per input column, the sum over calibration tokens of the squared
input activation and the number of tokens. Conversions compute it from the source run block by block
(`from_source`: no GGUF stage and one block in memory, whatever the depth), keeping llama.cpp's tools/imatrix rules:
only `blk.*` matrix products, 512-token chunks each from an empty KV cache. `compute` is llama.cpp's own way — its
scheduler's eval callback on an f16/f32 GGUF through llama-cpp-python — for a GGUF that exists already, and the
reference `from_source` is tested against.

Files: the GGUF format (`NAME.in_sum2` [n_mat, cols] and `NAME.counts` [n_mat, 1], `general.type` imatrix) is
written; it and the legacy `.dat` format are read, so an imatrix made by `llama-imatrix` works here and glmkit's
works with `llama-quantize --imatrix`.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glmkit.glm4.errors import GlmkitError

MIN_ROWS = 16  # tools/imatrix skips smaller batches


@dataclass
class Imatrix:
    """Per tensor: the summed squared activations per column, and the tokens that were summed."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)   # name → float64 [cols]
    counts: dict[str, int] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0

    def weights(self) -> dict[str, np.ndarray]:
        """What llama-quantize hands the quantizer: the mean squared activation per column."""
        return {n: (s / self.counts[n]).astype(np.float32) if self.counts[n] else np.ones_like(s, np.float32)
                for n, s in self.sums.items()}

    def add(self, name: str, x: np.ndarray) -> None:
        """Accumulate rows of input activations `x` [tokens, cols] for tensor `name`."""
        sq = np.einsum("ij,ij->j", x, x, dtype=np.float64)
        if name in self.sums:
            if self.sums[name].shape != sq.shape:
                raise GlmkitError(f"imatrix: {name} has {sq.shape[0]} columns here, {self.sums[name].shape[0]} before")
            self.sums[name] += sq
            self.counts[name] += x.shape[0]
        else:
            self.sums[name], self.counts[name] = sq, x.shape[0]


# --- files ---

def save(imatrix: Imatrix, path: str | Path) -> Path:
    """Write llama.cpp's GGUF imatrix format (what `llama-imatrix -o X.gguf` writes)."""
    import gguf

    from glmkit.common.atomic import atomic_output

    path = Path(path)
    with atomic_output(path, force=True, is_dir=False) as tmp:
        w = gguf.GGUFWriter(tmp, "imatrix")
        w.kv_data[0].pop("general.architecture", None)  # llama-imatrix writes none
        w.add_type("imatrix")
        w.add_array("imatrix.datasets", imatrix.datasets or ["glmkit"])
        w.add_uint32("imatrix.chunk_count", imatrix.chunk_count)
        w.add_uint32("imatrix.chunk_size", imatrix.chunk_size)
        for name in sorted(imatrix.sums):
            w.add_tensor(f"{name}.in_sum2", imatrix.sums[name].astype(np.float32)[None, :])
            w.add_tensor(f"{name}.counts", np.array([[imatrix.counts[name]]], dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def load(path: str | Path) -> Imatrix:
    """Read an imatrix file: llama.cpp's GGUF format, or its legacy `.dat`."""
    path = Path(path)
    if not path.is_file():
        raise GlmkitError(f"--imatrix {path}: no such file; give an imatrix (.gguf or .dat), a calibration text "
                          "file, or 'embedded'")
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        return _load_gguf(path) if magic == b"GGUF" else _load_legacy(path)
    except (ValueError, struct.error, IndexError, KeyError) as e:
        raise GlmkitError(f"--imatrix {path}: not a readable llama.cpp imatrix ({e})") from None


def _load_gguf(path: Path) -> Imatrix:
    from gguf import GGUFReader

    r = GGUFReader(path)
    field_value = {k: f.contents() for k, f in r.fields.items() if k.startswith("imatrix.")}
    tensors = {t.name: np.array(t.data, dtype=np.float64) for t in r.tensors}
    m = Imatrix(datasets=list(field_value.get("imatrix.datasets", [])),
                chunk_count=int(field_value.get("imatrix.chunk_count", 0)),
                chunk_size=int(field_value.get("imatrix.chunk_size", 0)))
    for name in sorted(n[: -len(".in_sum2")] for n in tensors if n.endswith(".in_sum2")):
        sums, counts = tensors[f"{name}.in_sum2"], tensors.get(f"{name}.counts")
        if counts is None:
            raise ValueError(f"{name}: in_sum2 without counts")
        if counts.size != 1:
            raise GlmkitError(f"{path}: {name} has per-expert counts; glmkit's GLM-4 models have no experts")
        m.sums[name], m.counts[name] = sums.reshape(-1), int(round(float(counts.reshape(-1)[0])))
    if not m.sums:
        raise ValueError("no .in_sum2 tensors")
    return m


def _load_legacy(path: Path) -> Imatrix:
    """The `.dat` format: per entry the name, ncall and the column means × ncall. The means are what the quantizer
    uses, so they come back as sums over `ncall` 'tokens'."""
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        out = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return out

    (n,) = take("<i")
    if n < 1:
        raise ValueError("no entries")
    m = Imatrix()
    for _ in range(n):
        (length,) = take("<i")
        name = data[pos:pos + length].decode()
        pos += length
        ncall, nval = take("<ii")
        values = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float64)
        pos += 4 * nval
        m.sums[name], m.counts[name] = values, max(ncall, 1)
    if pos < len(data):
        (m.chunk_count,) = take("<i")
        if pos < len(data):
            (length,) = take("<i")
            m.datasets.append(data[pos:pos + length].decode(errors="replace"))
    return m


# --- computing it with llama.cpp ---

class _Tensor(ctypes.Structure):
    """ggml.h's `struct ggml_tensor` as the llama.cpp that llama-cpp-python 0.3.36 vendors lays it out."""

    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16),
                ("flags", ctypes.c_int32), ("src", ctypes.c_void_p * 10), ("view_src", ctypes.c_void_p),
                ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64),
                ("extra", ctypes.c_void_p), ("padding", ctypes.c_char * 8)]


def _ggml_constants() -> tuple[int, int]:
    """GGML_OP_MUL_MAT and GGML_TYPE_F32 as this build numbers them (asked of ggml itself, not assumed)."""
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_op_name.restype, lib.ggml_op_name.argtypes = ctypes.c_char_p, [ctypes.c_int]
    lib.ggml_type_name.restype, lib.ggml_type_name.argtypes = ctypes.c_char_p, [ctypes.c_int]
    mul_mat = next(i for i in range(200) if lib.ggml_op_name(i) == b"MUL_MAT")
    f32 = next(i for i in range(64) if lib.ggml_type_name(i) == b"f32")
    return mul_mat, f32


def compute(gguf_path: str | Path, chunks: list[list[int]], *, dataset: str = "embedded",
            threads: int | None = None, progress=None) -> Imatrix:
    """The importance matrix of the model in `gguf_path` (f32/f16) over token chunks, as llama-imatrix computes
    it: each chunk decoded from an empty KV cache; `progress(n)` is called after each chunk."""
    import llama_cpp as L

    from glmkit.runtimes.cstdio import captured_c_output

    mul_mat, f32 = _ggml_constants()
    size = max(len(c) for c in chunks)
    m = Imatrix(datasets=[dataset], chunk_size=size)
    error: list[BaseException] = []

    def collect(t_ptr, ask, _user):
        try:
            t = _Tensor.from_address(t_ptr)
            if t.op != mul_mat or not t.src[0] or not t.src[1]:
                return False
            w, x = _Tensor.from_address(t.src[0]), _Tensor.from_address(t.src[1])
            name = w.name.decode(errors="replace")
            if ask:
                return x.ne[1] >= MIN_ROWS and x.type == f32 and name.startswith("blk.")
            cols, rows = x.ne[0], x.ne[1] * x.ne[2] * x.ne[3]
            if x.nb[1] != cols * 4 or not x.data:  # contiguous rows on the host: what the CPU backend gives
                raise GlmkitError(f"imatrix: {name}'s input is not a contiguous host tensor")
            m.add(name, np.ctypeslib.as_array(ctypes.cast(x.data, ctypes.POINTER(ctypes.c_float)),
                                              shape=(rows, cols)))
            return True
        except BaseException as e:  # noqa: BLE001 — an exception cannot cross the C callback
            error.append(e)
            return False

    callback = L.ggml_backend_sched_eval_callback(collect)
    with captured_c_output() as log:
        mp = L.llama_model_default_params()
        model = L.llama_model_load_from_file(str(gguf_path).encode(), mp)
        if not model:
            raise GlmkitError(f"imatrix: llama.cpp could not load {gguf_path}: {log().strip()[-200:]}")
        cp = L.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = size
        cp.n_threads = cp.n_threads_batch = threads or os.cpu_count() or 1
        cp.cb_eval, cp.cb_eval_user_data = callback, None
        ctx = L.llama_init_from_model(model, cp)
    # every position's logits, as llama-imatrix asks (it scores perplexity): else the last layer would compute
    # only the last row and its products fall under MIN_ROWS
    batch = L.llama_batch_init(size, 0, 1)
    try:
        for chunk in chunks:
            L.llama_memory_clear(L.llama_get_memory(ctx), True)
            batch.n_tokens = len(chunk)
            for i, tok in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tok, i, 1, True
                batch.seq_id[i][0] = 0
            rc = L.llama_decode(ctx, batch)
            if error:
                raise error[0]
            if rc != 0:
                raise GlmkitError(f"imatrix: llama.cpp could not evaluate a calibration chunk (code {rc})")
            m.chunk_count += 1
            if progress:
                progress(1)
    finally:
        with captured_c_output():
            L.llama_batch_free(batch)
            L.llama_free(ctx)
            L.llama_model_free(model)
    if not m.sums:
        raise GlmkitError(f"imatrix: no matrix products were seen in {gguf_path}; is it a GLM-4 GGUF?")
    return m


def from_source(model_dir: str | Path, chunks: list[list[int]], name_map, *, dataset: str = "embedded",
                progress=None) -> Imatrix:
    """The importance matrix llama-imatrix would compute, from the source itself run block by block
    (blockwise.py): the input of every decoder-block matrix product, under its GGUF name (`name_map`: gguf-py's
    tensor-name map). No GGUF and no whole model in memory; agrees with `compute` on the f32 GGUF to within
    float rounding (tests/test_quantize.py). `progress(1)` after each block."""
    from . import blockwise

    m = Imatrix(datasets=[dataset], chunk_size=max(len(c) for c in chunks))
    if min(len(c) for c in chunks) < MIN_ROWS:
        raise GlmkitError(f"imatrix: calibration chunks need at least {MIN_ROWS} tokens")

    def seen(hf_name: str, x: np.ndarray) -> None:
        name = name_map.get_name(hf_name + ".weight", try_suffixes=(".weight",))
        if name is None:
            raise GlmkitError(f"imatrix: {hf_name} has no GGUF name in gguf-py's map")
        m.add(name, x)

    blockwise.run(model_dir, chunks, on_input=seen, progress=progress)
    m.chunk_count = len(chunks)
    return m


def c_array(weights: dict[str, np.ndarray]):
    """`llama_model_imatrix_data[]`, null-terminated, for llama_model_quantize_params.imatrix; returns (array,
    keep-alive) — the float buffers must outlive the quantize call."""
    import llama_cpp as L

    keep = {n: np.ascontiguousarray(v, dtype=np.float32) for n, v in weights.items()}
    names = {n: n.encode() for n in keep}
    arr = (L.llama_model_imatrix_data * (len(keep) + 1))()
    for i, (n, v) in enumerate(sorted(keep.items())):
        arr[i].name = names[n]
        arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        arr[i].size = v.size
    arr[len(keep)].name = None
    return arr, (keep, names)
