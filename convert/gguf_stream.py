"""A quantized GGUF written as the source streams: llama.cpp chooses each tensor's type, ggml quantizes it.

The staged way — an f16 GGUF, then `llama_model_quantize` — needs two bytes a parameter of extra disk (65 GB for
GLM-4-32B). Here llama.cpp still makes every decision: its dry run, on a sparse f16 skeleton (the real header and
tensor table, the data a hole that takes no disk), names each tensor's type as `llama-quantize` would; then each
tensor is read from the memory-mapped source, rounded to f16 as the staged file held it, and quantized by ggml's
own `ggml_quantize_chunk` — the function `llama_model_quantize` calls on each slab of rows — with its importance
row. The bytes equal the staged path's (tests/test_gguf_stream.py); extra disk is the output plus the header.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np

from glmkit.common import progress
from glmkit.glm4.errors import GlmkitError

from . import gguf_types
from .gguf_types import Override

SLAB_ELEMENTS = 1 << 24  # floats of f32 scratch per slab of rows, whatever the tensor's size


@cache
def _ggml():
    """libggml-base as llama-cpp-python ships it, with the two functions llama_model_quantize uses per slab."""
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    f = lib.ggml_quantize_chunk
    f.restype = ctypes.c_size_t
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                  ctypes.c_void_p]
    v = lib.ggml_validate_row_data
    v.restype, v.argtypes = ctypes.c_bool, [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    return lib


def skeleton(path: Path, write_header) -> None:
    """An f16 GGUF whose data section is a hole: `write_header(path)` writes the header and tensor table and
    returns the planned tensor sizes; the file is then extended (sparsely) to the size the data would take."""
    import gguf

    sizes = write_header(path)
    align = gguf.GGUF_DEFAULT_ALIGNMENT
    size = path.stat().st_size
    data = -(-size // align) * align + sum(-(-n // align) * align for n in sizes)
    os.truncate(path, data)


def planned_types(skeleton_path: Path, outtype: str, imatrix: dict | None,
                  overrides: list[Override]) -> dict[str, str]:
    """GGUF tensor name → the GGML type llama.cpp's quantizer gives it, from its dry run (nothing is read)."""
    import re

    text = gguf_types.quantize(skeleton_path, skeleton_path.with_name("dry-run.gguf"), outtype, imatrix=imatrix,
                               overrides=overrides, dry_run=True)
    if "will require an imatrix" in text:
        raise GlmkitError(gguf_types.imatrix_hint(f"--outtype {outtype}"))
    line = re.compile(r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[[^\]]*\], type =\s*(\w+), size =\s*[\d.]+ MiB"
                      r"(?: ->\s*[\d.]+ MiB \((\w+)\))?")
    types = {m.group(1): (m.group(3) or m.group(2)) for m in line.finditer(text)}
    if not types:
        raise GlmkitError(f"llama.cpp's dry run for {outtype} listed no tensors; please report this")
    return types


def encode(tensor, staged: str, target: str, imatrix: np.ndarray | None, threads: int) -> np.ndarray:
    """One source tensor as llama.cpp's quantizer would write it: `staged` is its type in the f16 stage (f32 for
    1-D tensors, else f16), `target` the type llama.cpp chose. Quantized in slabs of rows, on `threads` threads."""
    import torch
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as Q

    q = Q[target.upper()]
    if staged == "f32" or q == Q.F32:
        return tensor.to(torch.float32).numpy()
    if q == Q.F16:
        return tensor.to(torch.float16).numpy()
    n_per_row = tensor.shape[-1]
    rows = tensor.reshape(-1, n_per_row)
    block, type_size = GGML_QUANT_SIZES[q]
    if n_per_row % block:
        raise GlmkitError(f"{target} needs rows of a multiple of {block}; llama.cpp chose it for {n_per_row}")
    row_bytes = n_per_row // block * type_size
    out = np.empty((rows.shape[0], row_bytes), dtype=np.uint8)
    lib = _ggml()
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    im_ptr = None if im is None else im.ctypes.data
    slab = max(1, SLAB_ELEMENTS // n_per_row)

    def part(x: np.ndarray, dst: np.ndarray, r0: int, r1: int) -> None:
        done = lib.ggml_quantize_chunk(q.value, x.ctypes.data, dst.ctypes.data, r0 * n_per_row, r1 - r0,
                                       n_per_row, im_ptr)
        start = dst.ctypes.data + r0 * row_bytes
        if done != (r1 - r0) * row_bytes or not lib.ggml_validate_row_data(q.value, start, done):
            raise GlmkitError(f"ggml's {target} quantizer returned invalid data; please report this")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for a in range(0, rows.shape[0], slab):
            b = min(a + slab, rows.shape[0])
            x = rows[a:b].to(torch.float16).to(torch.float32).contiguous().numpy()  # as the f16 stage held it
            n, dst = b - a, out[a:b]
            step = -(-n // threads)
            list(pool.map(part, [x] * threads, [dst] * threads, range(0, n, step),
                          [min(r + step, n) for r in range(0, n, step)]))
    return out.reshape(*tensor.shape[:-1], row_bytes)


class Streamer:
    """One source, ready to be quantized to any type tensor by tensor: its sparse f16 skeleton (for llama.cpp's
    dry runs) is made once in `stage`. header(path, outtype, file_type, types) → (GGUFWriter with the header and
    tensor table written, plan [(hf_name, gguf_name, GGML type, bytes)]); tensors() → (hf_name, tensor) in the
    plan's order (gguf_file.py's)."""

    def __init__(self, stage: Path, header: Callable, tensors: Callable[[], Iterator], label: str = "",
                 quiet: bool = False):
        import gguf

        self.header, self.tensors, self.label, self.quiet = header, tensors, label, quiet
        self.skeleton = stage / "skeleton.f16.gguf"
        self.staged: dict[str, str] = {}

        def skeleton_header(p: Path) -> list[int]:
            w, plan = header(p, "f16", gguf.LlamaFileType.MOSTLY_F16, None)
            w.close()
            self.staged.update({name: q.name.lower() for _, name, q, _ in plan})
            return [n for *_, n in plan]

        skeleton(self.skeleton, skeleton_header)
        self.f16_bytes = self.skeleton.stat().st_size  # what the f16 file would be (its apparent size)

    def close(self) -> None:
        self.skeleton.unlink(missing_ok=True)

    def planned_bytes(self, outtype: str, imatrix: dict | None = None, overrides: list[Override] | None = None) -> int:
        return gguf_types.planned_bytes(self.skeleton, outtype, imatrix=imatrix, overrides=overrides or [])

    def write(self, path: Path, outtype: str, imatrix: dict | None = None,
              overrides: list[Override] | None = None) -> dict[str, str]:
        """Write the source quantized to `outtype` at `path`; returns the per-tensor types llama.cpp chose."""
        import gguf

        overrides = overrides or []
        gguf_types.check_overrides(overrides, list(self.staged), has_imatrix=imatrix is not None)
        types = planned_types(self.skeleton, outtype, imatrix, overrides)
        w, plan = self.header(path, outtype, gguf.LlamaFileType[gguf_types.get(outtype).ftype], types)
        threads = os.cpu_count() or 1
        with progress.task(f"{self.label} → gguf {outtype} (streamed)", total=sum(p[3] for p in plan),
                           quiet=self.quiet) as adv:
            for (hf_name, tensor), (want, name, q, nbytes) in zip(self.tensors(), plan):
                if hf_name != want:
                    raise GlmkitError(f"{hf_name}: tensors came in another order than planned ({want}); the "
                                      "checkpoint changed while converting — convert it again")
                weights = (imatrix or {}).get(name)
                if weights is not None and weights.size != tensor.shape[-1]:
                    raise GlmkitError(f"imatrix: {name} has {weights.size} columns, the tensor {tensor.shape[-1]}; "
                                      "the importance matrix is for another model")
                data = encode(tensor, self.staged[name], q.name.lower(), weights, threads)
                if data.nbytes != nbytes:
                    raise GlmkitError(f"{name}: {data.nbytes} bytes encoded, {nbytes} planned; please report this")
                w.write_tensor_data(data)
                adv(nbytes)
                del data, tensor
        w.close()
        return {name: q.name.lower() for _, name, q, _ in plan}
