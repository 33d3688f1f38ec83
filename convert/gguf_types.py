"""Every GGUF type glmkit writes, and llama.cpp's own quantizer driven through its C API.

A declarative table: what users type for `--outtype`, the llama.cpp file type it is, who writes it (gguf-py for
unquantized files, llama.cpp's `llama_model_quantize` for every quantized one, which picks per-tensor types as
`llama-quantize` does), and whether llama.cpp refuses it without an importance matrix (checked against llama.cpp
itself in tests/test_quantize.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from glmkit.glm4.errors import GlmkitError


@dataclass(frozen=True)
class GGUFType:
    name: str                    # --outtype
    ftype: str                   # gguf.LlamaFileType member
    writer: str = "llama.cpp"    # "gguf-py": written directly, no quantizer
    needs_imatrix: bool = False  # llama.cpp refuses to quantize it without an importance matrix
    bpw: float = 0.0             # llama-quantize's nominal bits per weight, for listings


_TYPES = (
    GGUFType("f32", "ALL_F32", "gguf-py", bpw=32), GGUFType("f16", "MOSTLY_F16", "gguf-py", bpw=16),
    GGUFType("bf16", "MOSTLY_BF16", "gguf-py", bpw=16),
    GGUFType("q8_0", "MOSTLY_Q8_0", bpw=8.5), GGUFType("q6_k", "MOSTLY_Q6_K", bpw=6.56),
    GGUFType("q5_k_m", "MOSTLY_Q5_K_M", bpw=5.7), GGUFType("q5_k_s", "MOSTLY_Q5_K_S", bpw=5.54),
    GGUFType("q5_0", "MOSTLY_Q5_0", bpw=5.5), GGUFType("q4_k_m", "MOSTLY_Q4_K_M", bpw=4.89),
    GGUFType("q4_k_s", "MOSTLY_Q4_K_S", bpw=4.58), GGUFType("q4_0", "MOSTLY_Q4_0", bpw=4.5),
    GGUFType("iq4_nl", "MOSTLY_IQ4_NL", bpw=4.5), GGUFType("iq4_xs", "MOSTLY_IQ4_XS", bpw=4.25),
    GGUFType("q3_k_l", "MOSTLY_Q3_K_L", bpw=4.27), GGUFType("q3_k_m", "MOSTLY_Q3_K_M", bpw=3.91),
    GGUFType("q3_k_s", "MOSTLY_Q3_K_S", bpw=3.5), GGUFType("iq3_m", "MOSTLY_IQ3_M", bpw=3.66),
    GGUFType("iq3_s", "MOSTLY_IQ3_S", bpw=3.44), GGUFType("iq3_xs", "MOSTLY_IQ3_XS", needs_imatrix=True, bpw=3.3),
    GGUFType("iq3_xxs", "MOSTLY_IQ3_XXS", needs_imatrix=True, bpw=3.06),
    GGUFType("q2_k", "MOSTLY_Q2_K", bpw=2.96), GGUFType("q2_k_s", "MOSTLY_Q2_K_S", needs_imatrix=True, bpw=2.79),
    GGUFType("iq2_m", "MOSTLY_IQ2_M", needs_imatrix=True, bpw=2.7),
    GGUFType("iq2_s", "MOSTLY_IQ2_S", needs_imatrix=True, bpw=2.5),
    GGUFType("iq2_xs", "MOSTLY_IQ2_XS", needs_imatrix=True, bpw=2.31),
    GGUFType("iq2_xxs", "MOSTLY_IQ2_XXS", needs_imatrix=True, bpw=2.06),
    GGUFType("iq1_m", "MOSTLY_IQ1_M", needs_imatrix=True, bpw=1.75),
    GGUFType("iq1_s", "MOSTLY_IQ1_S", needs_imatrix=True, bpw=1.56),
)
TYPES = {t.name: t for t in _TYPES}
QUANTIZED = tuple(t.name for t in _TYPES if t.writer == "llama.cpp")
# tensor types llama.cpp refuses to produce without importance data (llama-quant.cpp's tensor_requires_imatrix)
TENSOR_TYPES_NEEDING_IMATRIX = {"iq3_xxs", "iq2_xxs", "iq2_xs", "iq2_s", "iq1_m", "iq1_s"}


def get(outtype: str) -> GGUFType:
    if outtype not in TYPES:
        raise GlmkitError(f"--outtype {outtype}: choose one of {', '.join(TYPES)}")
    return TYPES[outtype]


def imatrix_hint(what: str) -> str:
    return (f"{what} needs an importance matrix: add --imatrix embedded (glmkit's calibration text), "
            "--imatrix TEXT_FILE (your own text) or --imatrix FILE.gguf|.dat (made by llama-imatrix)")


@dataclass(frozen=True)
class Override:
    """`--tensor-type PATTERN=TYPE`: tensors whose GGUF name the regex PATTERN matches (searched, as
    llama-quantize does) get the GGML type TYPE."""

    pattern: str
    type: str

    @classmethod
    def parse(cls, text: str) -> Override:
        import gguf

        pattern, sep, qtype = text.partition("=")
        if not sep or not pattern or not qtype:
            raise GlmkitError(f"--tensor-type {text}: give PATTERN=TYPE, e.g. attn_v=q8_0 or 'ffn_down=q6_k'")
        try:
            re.compile(pattern)
        except re.error as e:
            raise GlmkitError(f"--tensor-type {text}: {pattern!r} is not a regular expression ({e})") from None
        if qtype.upper() not in gguf.GGMLQuantizationType.__members__:
            names = ", ".join(m.lower() for m in gguf.GGMLQuantizationType.__members__ if not m.startswith("TQ"))
            raise GlmkitError(f"--tensor-type {text}: {qtype} is not a GGML type; choose one of {names}")
        return cls(pattern.lower(), qtype.lower())

    def __str__(self) -> str:
        return f"{self.pattern}={self.type}"


def check_overrides(overrides: list[Override], tensor_names: list[str], has_imatrix: bool) -> None:
    """Refuse, before quantizing, an override that names no tensor or a type that needs an importance matrix."""
    for o in overrides:
        if not any(re.search(o.pattern, n) for n in tensor_names):
            example = next((n for n in tensor_names if n.startswith("blk.")), tensor_names[0])
            raise GlmkitError(f"--tensor-type {o}: no tensor name matches {o.pattern!r}; names look like "
                              f"{example}, token_embd.weight, output.weight")
        if o.type in TENSOR_TYPES_NEEDING_IMATRIX and not has_imatrix:
            raise GlmkitError(imatrix_hint(f"--tensor-type {o}"))


def quantize(src: Path, dst: Path, outtype: str, *, imatrix: dict | None = None,
             overrides: Sequence[Override] = (), dry_run: bool = False, threads: int | None = None) -> str:
    """llama.cpp's own quantizer from an f16/f32 GGUF; returns its log. `imatrix`: tensor name → per-column
    weights (Imatrix.weights()). Its C-level log is captured and shown only if it fails."""
    import gguf
    import llama_cpp

    from glmkit.runtimes.cstdio import captured_c_output

    from . import imatrix as imatrix_mod

    t = get(outtype)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = gguf.LlamaFileType[t.ftype].value
    params.nthread = threads or os.cpu_count() or 1
    params.dry_run = dry_run
    keep = []
    if imatrix:
        arr, alive = imatrix_mod.c_array(imatrix)
        params.imatrix = arr
        keep += [arr, alive]
    if overrides:
        patterns = [o.pattern.encode() for o in overrides]
        arr = (llama_cpp.llama_model_tensor_override * (len(overrides) + 1))()
        for i, o in enumerate(overrides):
            arr[i].pattern, arr[i].type = patterns[i], gguf.GGMLQuantizationType[o.type.upper()].value
        arr[len(overrides)].pattern = None
        params.tt_overrides = arr
        keep += [arr, patterns]
    with captured_c_output() as log, _llama_log() as lines:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        text = log() + "".join(lines)
    if rc != 0:
        if "requires an imatrix" in text or "requires an importance matrix" in text:
            raise GlmkitError(imatrix_hint(f"--outtype {outtype}"))
        tail = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        raise GlmkitError(f"llama.cpp's quantizer failed for {outtype} (code {rc}): {tail[0]}")
    return text


@contextlib.contextmanager
def _llama_log():
    """llama.cpp's log lines for the block, whatever level an earlier `Llama(verbose=False)` left set; then
    llama-cpp-python's own log callback again."""
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):
        lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


_QUANT_SIZE = re.compile(r"quant size\s*=\s*([0-9.]+) MiB")
_MODEL_SIZE = re.compile(r"model size\s*=\s*([0-9.]+) MiB")


def planned_bytes(src: Path, outtype: str, **kw) -> int:
    """The size a quantization would have, from llama.cpp's dry run (its tensor sizes to 0.01 MiB) plus the
    source file's metadata: exact to about 10 KB, without writing anything."""
    text = quantize(src, src.with_name(src.name + ".dry"), outtype, dry_run=True, **kw)
    new, org = _QUANT_SIZE.search(text), _MODEL_SIZE.search(text)
    if not new or not org:
        raise GlmkitError(f"llama.cpp's dry run printed no sizes for {outtype}")
    return int(Path(src).stat().st_size - float(org.group(1)) * 2**20 + float(new.group(1)) * 2**20)
