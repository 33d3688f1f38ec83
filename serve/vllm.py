"""glm-vllm DIR: the `vllm serve` command for a glm-convert --to hf output, with glmkit's GLM-4 parsers as plugins.

vLLM runs transformers checkpoints (GlmForCausalLM, Glm4ForCausalLM) with continuous batching, tensor and
pipeline parallelism and multi-node serving; what it lacks for GLM-4-0414 and glm-4-9b-chat is their tool-call
format, which serve/vllm_plugins.py supplies. GLM-4V runs as glmkit's own model (serve/vllm_glm4v.py, which vLLM
finds through glmkit's entry point where glmkit is installed beside it), named by a --to hf directory of GLM-4V.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from glmkit.glm4 import families, vision
from glmkit.glm4.errors import GlmkitError
from glmkit.glm4.messages import find_template

PLUGINS = Path(__file__).with_name("vllm_plugins.py")


def vllm_command(model: str | Path, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
                 launcher: tuple[str, ...] = ("vllm", "serve")) -> list[str]:
    """argv for vLLM's OpenAI server on `model` (a transformers directory), GLM-4 tool calls parsed by glmkit, Z1
    reasoning split out for Z1 models, the context the config advertises (YaRN included). `launcher` is how to
    start it: `vllm serve` (DIR positional), or e.g. (python, "-m", "vllm.entrypoints.openai.api_server")."""
    path = Path(model)
    if not (path / "config.json").is_file():
        raise GlmkitError(f"{model}: not a transformers checkpoint directory; make one with "
                          f"glm-convert SRC --to hf -o {model}")
    config = json.loads((path / "config.json").read_text())
    family = families.detect(config, str(path / "config.json"))
    if family.vision and config.get("architectures") != [vision.VLLM_ARCHITECTURE]:
        raise GlmkitError(f"{model}: GLM-4V as published. vLLM's own model gives its image patches sequential "
                          "positions where the original gives them one shared position (measured on "
                          "synthetic:glm4v:tiny, 16 patches: logits off by up to 4.0, a different top token at 8 % "
                          "of the text after the image; at 1,600 patches the shift is 100 times longer) — convert "
                          f"it with glm-convert {model} --to hf for glmkit's GLM-4V model in vLLM")
    if not family.native and not family.vision:
        raise GlmkitError(f"{model}: the original chatglm format needs remote code in vLLM; convert it first with "
                          f"glm-convert {model} --to hf (glmkit remaps it natively)")
    fmt = families.chat_format(config, str(path), find_template(path, default=False))
    model_arg = [str(path)] if tuple(launcher[-1:]) == ("serve",) else ["--model", str(path)]
    argv = [*launcher, *model_arg, "--host", host, "--port", str(port),
            "--served-model-name", name or path.name, "--max-model-len", str(families.context_length(config)),
            "--enable-auto-tool-choice", "--tool-parser-plugin", str(PLUGINS), "--tool-call-parser", "glmkit-glm4"]
    if fmt.thinks:
        argv += ["--reasoning-parser-plugin", str(PLUGINS), "--reasoning-parser", "glmkit-z1"]
    return argv


def main() -> None:
    p = argparse.ArgumentParser(prog="glm-vllm", description="Print the vLLM command that serves a GLM-4 "
                                                             "transformers checkpoint with glmkit's parsers.")
    p.add_argument("model", help="a glm-convert --to hf output (or any glm/glm4 transformers directory)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", help="the model id clients send (default: the directory's name)")
    args = p.parse_args()
    try:
        print(shlex.join(vllm_command(args.model, args.host, args.port, args.model_name)))
    except GlmkitError as e:
        print(f"glm-vllm: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
