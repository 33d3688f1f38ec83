"""Before writing: will the disk hold what a conversion writes, and can this machine's memory do the export?

Estimates err on the large side; too little disk is one error with the numbers and nothing written (exit 2).
"""

from __future__ import annotations

from glmkit.common.disk import check_disk  # noqa: F401  (the converters call preflight.check_disk)
from glmkit.glm4.errors import GlmkitError

GB = 2**30
# Bytes per parameter of an output, generous (embeddings and lm_head stay 8-bit under OpenVINO int4 by default;
# llama.cpp keeps some tensors at higher precision than the file type says).
BYTES_PER_PARAMETER = {"f32": 4.0, "fp32": 4.0, "f16": 2.0, "fp16": 2.0, "bf16": 2.0, "q8_0": 1.1, "int8": 1.05,
                       "q6_k": 0.85, "q5_k_m": 0.75, "q4_k_m": 0.65, "q4_0": 0.65, "int4": 0.8}
# The OpenVINO export's own allocations (the source is memory-mapped): 6.6 GB for the 9.4 B-parameter shape.
EXPORT_BYTES_PER_PARAMETER = 0.75


def output_bytes(parameters: int, precision: str) -> int:
    return int(parameters * BYTES_PER_PARAMETER.get(precision, 4.0))


def check_export_memory(parameters: int, quiet: bool = False) -> None:
    """Refuse an OpenVINO export this machine's memory (RAM and swap) cannot hold; warn when it is tight now."""
    import psutil

    from glmkit.common import progress

    need = int(parameters * EXPORT_BYTES_PER_PARAMETER)
    total = psutil.virtual_memory().total + psutil.swap_memory().total
    if need > total:
        raise GlmkitError(f"exporting {parameters / 1e9:.1f} B parameters to OpenVINO needs about {need / GB:.1f} GB "
                          "of "
                          f"memory; this machine has {total / GB:.1f} GB (RAM and swap) — export on a larger machine "
                          "and copy the IR over, or convert to GGUF, which streams")
    available = psutil.virtual_memory().available
    if need > available:
        progress.say(f"warning: the export needs about {need / GB:.1f} GB and {available / GB:.1f} GB is available "
                     "now; close other programs", quiet)


# NNCF's data-aware methods run the exported fp32 IR on calibration text: the fp32 weights must stay resident
# (GLM-4-9B's shape did not fit a 24 GB machine: docs/quantization.md). Only AWQ and ratios below 1 take that
# way; GPTQ and scale estimation at ratio 1.0 go block by block (openvino_blockwise.py).
CALIBRATION_BYTES_PER_PARAMETER = 4.0
CALIBRATION_SLACK = 2 * GB


def calibration_memory_shortfall(parameters: int) -> str | None:
    """None when data-aware compression (GPTQ, AWQ, scale estimation) fits this machine's memory, else why not."""
    import psutil

    need = int(parameters * CALIBRATION_BYTES_PER_PARAMETER + CALIBRATION_SLACK)
    total = psutil.virtual_memory().total + psutil.swap_memory().total
    if need <= total:
        return None
    return (f"data-aware compression runs the fp32 model on calibration text: about {need / GB:.1f} GB, and this "
            f"machine has {total / GB:.1f} GB")


def check_glm4v_export_memory(language: int, vision: int, loaded_bytes: int, converted: bool) -> None:
    """GLM-4V's export holds its language model, then its vision tower, one after the other. The language model
    stays memory-mapped when it loads in the checkpoint's own dtype (the export's own allocations then, as for
    text); converted (fp16 asked of a bf16 checkpoint, or a 16-bit one loaded in fp32) it is a copy. The tower's
    tensors are read into memory. `loaded_bytes`: bytes a parameter once loaded."""
    import psutil

    parts = {"language model": int(language * (EXPORT_BYTES_PER_PARAMETER + (loaded_bytes if converted else 0))),
             "vision tower": int(vision * (EXPORT_BYTES_PER_PARAMETER + loaded_bytes))}
    part, need = max(parts.items(), key=lambda kv: kv[1])
    total = psutil.virtual_memory().total + psutil.swap_memory().total
    if need > total:
        n = language if part == "language model" else vision
        raise GlmkitError(f"exporting GLM-4V holds its {part} ({n / 1e9:.1f} B parameters, {loaded_bytes} bytes "
                          f"each{' as a converted copy' if converted and part == 'language model' else ''}): about "
                          f"{need / GB:.1f} GB of memory; this machine has {total / GB:.1f} GB (RAM and swap) — "
                          "export on a larger machine and copy the IR over"
                          + (", or ask for int8/int4, which keep the bf16 checkpoint memory-mapped"
                             if converted and part == "language model" else ""))
