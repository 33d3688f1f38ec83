"""What a benchmark ran on: CPU, cores, ISA flags, library versions, glmkit commit."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
             "amx_fp16", "f16c", "fma")


def reference_dtype() -> str:
    """The half-precision reference the CPU computes natively: fp16 with AVX512-FP16 / AMX-FP16, else bf16."""
    return "float16" if {"avx512_fp16", "amx_fp16"} & set(_cpuinfo()[1]) else "bfloat16"
LIBRARIES = ("torch", "transformers", "optimum-intel", "openvino", "openvino-genai", "openvino-tokenizers", "nncf",
             "gguf", "llama-cpp-python", "numpy")


def _cpuinfo() -> tuple[str, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor(), []
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return model, [f for f in ISA_FLAGS if f in flags]


def _commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(threads: int | None = None) -> dict:
    model, flags = _cpuinfo()
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": model, "cores": os.cpu_count(), "threads": threads or os.cpu_count(), "isa": flags,
            "python": platform.python_version(), "platform": platform.platform(), "libraries": versions,
            "glmkit_commit": _commit()}
