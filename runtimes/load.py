"""load(): pick the backend from what the model is, and open it."""

from __future__ import annotations

from pathlib import Path

from glmkit.convert import GlmkitError

BACKENDS = ("auto", "openvino", "llamacpp", "transformers")


def detect_backend(model: str) -> str:
    p = Path(str(model)).expanduser()
    if p.is_file():
        with p.open("rb") as f:  # the magic only: a 9B GGUF is 18 GB
            if f.read(4) == b"GGUF":
                return "llamacpp"
    if p.suffix == ".gguf" and not p.exists():
        raise GlmkitError(f"{model}: no such GGUF file; convert one with glm-convert SRC --to gguf")
    if p.suffix == ".gguf":
        raise GlmkitError(f"{model}: not a GGUF file (no GGUF magic); re-create it with glm-convert --to gguf")
    if p.is_dir() and (p / "openvino_model.xml").is_file():
        return "openvino"
    return "transformers"


def _hf_dir(model: str, quiet: bool = True) -> Path:
    """A transformers-loadable directory for any glm-convert SRC; chatglm sources are remapped once, cached."""
    import hashlib

    from glmkit.convert import checkpoint, hf, source

    src = source.resolve(model, quiet=quiet)
    ckpt = checkpoint.open_checkpoint(src.path)
    if ckpt.family.name != "chatglm":
        return src.path
    key = hashlib.sha256(str(src.path.resolve()).encode()).hexdigest()[:16]
    out = source.cache_root() / "hf" / key
    if not (out / "config.json").is_file():
        hf.to_hf(str(src.path), out, force=True, quiet=quiet)
    return out


def load(model: str, backend: str = "auto", device: str = "CPU", **options):
    """Open `model` with one backend. Options go to the backend: dtype/threads (transformers), cache_dir and
    OpenVINO properties such as MAX_PROMPT_LEN (openvino), n_ctx/n_threads/n_batch/kv_cache (llamacpp)."""
    if backend not in BACKENDS:
        raise GlmkitError(f"backend {backend}: choose one of {', '.join(BACKENDS)}")
    kind = detect_backend(model) if backend == "auto" else backend
    name = str(model)
    if kind == "openvino":
        from .openvino import OpenVINORuntime

        if not (Path(model) / "openvino_model.xml").is_file():
            raise GlmkitError(f"{model}: no openvino_model.xml; convert it with glm-convert {model} --to openvino")
        return OpenVINORuntime(model, device=device, model_name=name, **options)
    if device.upper() != "CPU":
        raise GlmkitError(f"--device {device} needs the openvino backend; {kind} runs on the CPU here")
    if kind == "llamacpp":
        from .llamacpp import LlamaCppRuntime

        if not Path(model).is_file():
            raise GlmkitError(f"{model}: no such GGUF file; convert one with glm-convert SRC --to gguf")
        return LlamaCppRuntime(model, model_name=name, **options)
    from .reference import TransformersRuntime

    return TransformersRuntime(_hf_dir(model), model_name=name, **options)
