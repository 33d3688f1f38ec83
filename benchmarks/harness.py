"""glm-bench eval: lm-evaluation-harness's scores of any artifact, through glm-serve.

glm-serve starts on the artifact (127.0.0.1, a free port); lm-eval runs against it as it would against any
OpenAI-compatible server: log-likelihood tasks through `local-completions` (echo and logprobs on
/v1/completions; tokens counted by the served model's own tokenizer, the `remote` backend, through /tokenize),
generation tasks through `local-chat-completions` with the model's chat template. Task files are lm-eval YAML;
their `data_files` may be relative to the YAML (benchmarks/tasks/ holds two on glm4-tiny), so it runs offline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from glmkit.glm4.errors import GlmkitError

from .serve import _free_port, _server

TASKS = Path(__file__).parent / "tasks"
LM_EVAL = "lm-eval[api]==0.4.13"


def _task_dir(files: list[Path], into: Path) -> list[str]:
    """Copy each task YAML into `into` with its data files made absolute; the task names, in order."""
    import yaml

    names = []
    for f in files:
        if not f.is_file():
            raise GlmkitError(f"--tasks {f}: no such task file (an lm-eval task YAML)")
        spec = yaml.safe_load(f.read_text(encoding="utf-8"))
        if not isinstance(spec, dict) or "task" not in spec:
            raise GlmkitError(f"--tasks {f}: not an lm-eval task (no `task:` name)")
        data = (spec.get("dataset_kwargs") or {}).get("data_files")
        if isinstance(data, dict):
            spec["dataset_kwargs"]["data_files"] = {k: str((f.parent / v).resolve()) for k, v in data.items()}
        (into / f.name).write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
        names.append(spec["task"])
    return names


def _kind(spec_file: Path) -> str:
    import yaml

    return yaml.safe_load(spec_file.read_text(encoding="utf-8")).get("output_type", "")


def evaluate(model: str, tasks: list[str | Path], python: str | None = None, limit: int | None = None,
             samples: bool = False, serve_flags: tuple[str, ...] = (), quiet: bool = False) -> dict:
    """{task: {metric: value}} of lm-eval on `model` served by glm-serve; with samples=True also
    {"samples": {task: [lm-eval's per-document records]}}. `python`: an interpreter with lm-eval installed
    (default this one)."""
    python = python or sys.executable
    check = subprocess.run([python, "-c", "import lm_eval"], capture_output=True)
    if check.returncode != 0:
        raise GlmkitError(f"{python} has no lm-evaluation-harness; install it with pip install '{LM_EVAL}' (or pass "
                          "--python with a venv that has it)")
    files = [Path(t) for t in tasks]
    work = Path(tempfile.mkdtemp(prefix="glm-bench-eval-"))
    try:
        include = work / "tasks"
        include.mkdir()
        names = _task_dir(files, include)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [str(Path(sys.executable).parent / "glm-serve"), model, "--port", str(port), "--model-name", "glmkit",
               "--log-level", "warning", *serve_flags]
        out: dict = {"model": model, "scores": {}, "samples": {}}
        with _server(cmd, port, "glm-serve"):
            for f, name in zip(files, names):
                chat = _kind(include / f.name) == "generate_until"
                endpoint = "chat/completions" if chat else "completions"
                args = (f"base_url={base}/v1/{endpoint},model=glmkit,num_concurrent=1,max_retries=1,"
                        + ("tokenizer_backend=none" if chat else "tokenizer_backend=remote"))
                cmd_eval = [python, "-m", "lm_eval", "--model", "local-chat-completions" if chat else
                            "local-completions", "--model_args", args, "--tasks", name, "--include_path",
                            str(include), "--output_path", str(work / "out"), "--log_samples"]
                if chat:
                    cmd_eval.append("--apply_chat_template")
                if limit:
                    cmd_eval += ["--limit", str(limit)]
                env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
                run = subprocess.run(cmd_eval, capture_output=True, text=True, env=env)
                if run.returncode != 0:
                    raise GlmkitError(f"lm-eval failed on {name}: {run.stderr.strip()[-600:]}")
                out["scores"][name], out["samples"][name] = _read(work / "out", name)
                if not quiet:
                    print(f"{name}: {out['scores'][name]}", file=sys.stderr, flush=True)
        if not samples:
            del out["samples"]
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _read(folder: Path, task: str) -> tuple[dict, list]:
    """The newest results file's metrics for `task` and its samples file's records."""
    results = sorted(folder.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not results:
        raise GlmkitError(f"lm-eval wrote no results for {task}")
    metrics = json.loads(results[-1].read_text(encoding="utf-8"))["results"][task]
    scores = {k.split(",")[0]: v for k, v in metrics.items() if "," in k and "stderr" not in k}
    found = sorted(folder.rglob(f"samples_{task}_*.jsonl"), key=lambda p: p.stat().st_mtime)
    records = [json.loads(line) for line in found[-1].read_text(encoding="utf-8").splitlines()] if found else []
    return scores, records


def to_markdown(data: dict) -> str:
    lines = [f"# lm-evaluation-harness — {data['model']}", "", "| task | metric | value |", "|---|---|---|"]
    for task, metrics in data["scores"].items():
        lines += [f"| {task} | {m} | {v:.4f} |" for m, v in metrics.items() if isinstance(v, (int, float))]
    return "\n".join(lines) + "\n"


def plot(data: dict, path) -> None:
    return None
