"""glm-bench serve: what several clients at once get from a server — over HTTP, as apps see it.

N clients (for each N in `clients`) each replay their own multi-turn chat against the server at the same time,
streaming every answer: aggregate output tokens/s over the level's wall time, time to first token p50/p99, the
inter-token latency between streamed chunks, and errors (429s included). The same load goes to glm-serve and, for
a GGUF, to llama.cpp's own C++ server (`llama-server`, when one is on PATH or given) and llama-cpp-python's OpenAI
server (`llama_cpp.server`) on the same file, one after the other in the same run. Clients speak plain HTTP/SSE
(http.client), so the figures include what any client pays. With `in_process`, the same clients also drive the
runtime glm-serve serves (the same load() options) from threads in this process: the engine without HTTP, which
says what glm-serve itself costs.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from glmkit.glm4.errors import GlmkitError

SCHEMA = "glm-bench-serve/1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _server(cmd: list[str], port: int, name: str, timeout: float = 600):
    """A server subprocess, ready once GET /v1/models answers; stopped at the end. Its log goes to a file: a
    pipe nobody reads fills up (llama.cpp logs the whole model load) and blocks the server."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise GlmkitError(f"{name} exited with {proc.returncode}: {log.read().strip()[-300:]}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/v1/models")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise GlmkitError(f"{name} did not answer within {timeout:.0f} s")
            time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def llama_server_binary(given: str | None = None) -> str | None:
    """llama.cpp's llama-server: the one given (a path, or a name on PATH), else one on PATH, else None."""
    if given is None:
        return shutil.which("llama-server")
    found = shutil.which(given)
    if not found:
        raise GlmkitError(f"--llama-server {given}: not an executable; give the path of llama.cpp's llama-server")
    return found


def servers(model: str, n_ctx: int, threads: int | None, max_clients: int, peers: bool,
            vllm: tuple[str, str] | None = None, serve_flags: tuple[str, ...] = (), llama_server: str | None = None):
    """(name, command, port) for glm-serve, for a GGUF llama-server (the binary `llama_server`) and
    llama_cpp.server, and with `vllm` = (its venv's python, a transformers directory of the same model) vLLM's
    OpenAI server with glmkit's plugins."""
    bin_dir = Path(sys.executable).parent
    port = _free_port()
    glm = [str(bin_dir / "glm-serve"), model, "--port", str(port), "--model-name", "bench", "--n-ctx", str(n_ctx),
           "--max-concurrency", str(max_clients), "--log-level", "warning", *serve_flags]
    if threads:
        glm += ["--threads", str(threads)]
    out = [("glm-serve", glm, port)]
    if peers and model.endswith(".gguf") and llama_server:
        port = _free_port()
        # -c is shared by its slots: each slot gets n_ctx, as each glm-serve sequence does; its host-RAM prompt
        # cache (--cache-ram) and slot choice by prompt similarity stay at their defaults
        cmd = [llama_server, "-m", model, "--alias", "bench", "--host", "127.0.0.1", "--port", str(port),
               "-c", str(n_ctx * max_clients), "-np", str(max_clients), "-fa", "on", "--no-webui"]
        if threads:
            cmd += ["-t", str(threads), "-tb", str(threads)]
        out.append(("llama-server", cmd, port))
    if peers and model.endswith(".gguf"):
        port = _free_port()
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--model_alias", "bench", "--port",
               str(port), "--n_ctx", str(n_ctx), "--flash_attn", "true",  # one sequence: max_clients does not apply
               "--interrupt_requests", "false"]  # its default cuts a running answer off when another request arrives
        if threads:
            cmd += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
        out.append(("llama_cpp.server", cmd, port))
    if vllm:
        from glmkit.serve.vllm import vllm_command

        python, hf_dir = vllm
        port = _free_port()
        cmd = vllm_command(hf_dir, port=port, name="bench",
                           launcher=(python, "-m", "vllm.entrypoints.openai.api_server"))
        out.append(("vllm", ["env", "VLLM_CPU_KVCACHE_SPACE=2", *cmd, "--max-model-len", str(n_ctx),
                             "--max-num-seqs", str(max_clients)], port))
    return out


def _stream_turn(port: int, messages: list[dict], answer_tokens: int) -> dict:
    """One streamed chat turn: TTFT, gaps between content chunks, completion tokens, the text."""
    body = json.dumps({"model": "bench", "messages": messages, "max_tokens": answer_tokens, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        r.read()
        return {"error": r.status}
    stamps, parts, tokens = [], [], None
    for raw in r:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
        for choice in event.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                stamps.append(time.perf_counter())
                parts.append(text)
    c.close()
    if not stamps and tokens is None:  # no text, and no usage to say it was a real (empty) answer
        return {"error": "empty answer"}
    if not stamps:  # the model ended its answer at once (a stop token first): a turn, with no text
        return {"ttft_ms": (time.perf_counter() - t0) * 1000, "gaps_ms": [], "tokens": tokens, "text": ""}
    return {"ttft_ms": (stamps[0] - t0) * 1000, "gaps_ms": [(b - a) * 1000 for a, b in zip(stamps, stamps[1:])],
            "tokens": tokens if tokens is not None else len(parts), "text": "".join(parts)}


def _runtime_turn(runtime, messages: list[dict], answer_tokens: int) -> dict:
    """One turn on a runtime in this process, measured as _stream_turn measures an HTTP one."""
    from glmkit.runtimes import GenerationConfig, GenerationResult, TextDelta

    t0 = time.perf_counter()
    stamps, parts, tokens = [], [], 0
    for item in runtime.stream(messages, GenerationConfig(max_new_tokens=answer_tokens)):
        if isinstance(item, TextDelta) and item.text and not item.reasoning:
            stamps.append(time.perf_counter())
            parts.append(item.text)
        elif isinstance(item, GenerationResult):
            tokens = len(item.token_ids)
    first = stamps[0] if stamps else time.perf_counter()
    return {"ttft_ms": (first - t0) * 1000, "gaps_ms": [(b - a) * 1000 for a, b in zip(stamps, stamps[1:])],
            "tokens": tokens, "text": "".join(parts)}


def _client(turn, user: list[str], answer_tokens: int, out: list[dict]) -> None:
    messages: list[dict] = []
    for text in user:
        messages.append({"role": "user", "content": text})
        result = turn(messages, answer_tokens)
        out.append(result)
        if "error" in result:
            return
        messages.append({"role": "assistant", "content": result["text"]})


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def load_level(turn, n: int, turns: int, user_chars: int, answer_tokens: int) -> dict:
    """n clients at once, each its own conversation (cut from different places of the held-out text); `turn`
    (messages, answer_tokens) -> one measured turn."""
    from .chat import user_messages

    texts = user_messages(turns * n, user_chars)
    results: list[list[dict]] = [[] for _ in range(n)]
    threads = [threading.Thread(target=_client, args=(turn, texts[i * turns:(i + 1) * turns], answer_tokens,
                                                      results[i])) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    turns_done = [t for r in results for t in r if "error" not in t]
    tokens = sum(t["tokens"] for t in turns_done)
    ttft = [t["ttft_ms"] for t in turns_done]
    gaps = [g for t in turns_done for g in t["gaps_ms"]]
    return {"clients": n, "wall_s": round(wall, 3), "turns": len(turns_done), "output_tokens": tokens,
            "output_tps": round(tokens / wall, 2) if wall > 0 else 0.0,
            "ttft_ms_p50": round(_pct(ttft, 0.5), 1), "ttft_ms_p99": round(_pct(ttft, 0.99), 1),
            "itl_ms_p50": round(_pct(gaps, 0.5), 2), "itl_ms_p99": round(_pct(gaps, 0.99), 2),
            "errors": sum(1 for r in results for t in r if "error" in t),
            "error_kinds": sorted({str(t["error"]) for r in results for t in r if "error" in t})}


def _levels(turn, name: str, clients, turns: int, user_chars: int, answer_tokens: int, quiet: bool) -> list[dict]:
    """Each load level in turn after one warm-up turn; scaling relative to the first level."""
    from glmkit.common import progress

    turn([{"role": "user", "content": "warm up"}], 4)
    levels = []
    for n in clients:
        progress.say(f"{name}: {n} client(s) × {turns} turns", quiet)
        levels.append(load_level(turn, n, turns, user_chars, answer_tokens))
    base = levels[0]["output_tps"] or 1.0
    for level in levels:
        level["scaling"] = round(level["output_tps"] / base, 2)
    return levels


def run(model: str, clients=(1, 2, 4, 8), turns: int = 3, user_chars: int = 300, answer_tokens: int = 32,
        n_ctx: int = 4096, threads: int | None = None, peers: bool = True, quiet: bool = False,
        vllm: tuple[str, str] | None = None, slots: int | None = None, serve_flags: tuple[str, ...] = (),
        llama_server: str | None = None, in_process: bool = False) -> dict:
    from glmkit.common import progress

    from .environment import environment

    if not (Path(model).is_dir() or Path(model).is_file()):
        raise GlmkitError(f"{model}: give an OpenVINO IR directory or a .gguf file")
    if min(clients) < 1 or turns < 1 or (slots is not None and slots < 1):
        raise GlmkitError("--clients, --turns and --slots must be at least 1")
    llama_server = llama_server_binary(llama_server) if peers else None
    data: dict = {"schema": SCHEMA, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": model,
            "environment": environment(threads),
            "settings": {"clients": list(clients), "turns": turns, "user_chars": user_chars,
                         "answer_tokens": answer_tokens, "n_ctx": n_ctx, "slots": slots or max(clients),
                         "serve_flags": list(serve_flags), "in_process": in_process, "llama_server": llama_server},
            "servers": []}
    for name, cmd, port in servers(model, n_ctx, threads, slots or max(clients), peers, vllm, serve_flags,
                                   llama_server):
        progress.say(f"starting {name}", quiet)
        with _server(cmd, port, name):
            levels = _levels(lambda messages, n, port=port: _stream_turn(port, messages, n), name, clients, turns,
                             user_chars, answer_tokens, quiet)
        data["servers"].append({"server": name, "levels": levels})
    if in_process:
        from glmkit.runtimes import load

        name = "engine in-process"
        progress.say(f"loading {name}", quiet)
        options: dict = {"n_ctx": n_ctx, "parallel": slots or max(clients), **({"threads": threads} if threads else {})}
        with load(model, **options) as runtime:
            levels = _levels(lambda messages, n: _runtime_turn(runtime, messages, n), name, clients, turns,
                             user_chars, answer_tokens, quiet)
        data["servers"].append({"server": name, "levels": levels})
    return data


def to_markdown(data: dict) -> str:
    lines = [f"## glm-bench serve · {Path(data['model']).name}", "",
             f"{data['settings']['turns']} streamed turns per client, {data['settings']['answer_tokens']}-token "
             "answers, greedy; each client its own conversation.", "",
             "| server | clients | output t/s | × 1 client | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | "
             "errors |", "|---|---|---|---|---|---|---|---|---|"]
    for s in data["servers"]:
        for lv in s["levels"]:
            lines.append(f"| {s['server']} | {lv['clients']} | {lv['output_tps']:.1f} | {lv['scaling']:.2f} | "
                         f"{lv['ttft_ms_p50']:.0f} | {lv['ttft_ms_p99']:.0f} | {lv['itl_ms_p50']:.2f} | "
                         f"{lv['itl_ms_p99']:.2f} | {lv['errors']} |")
    return "\n".join(lines) + "\n"


def plot(data: dict, path) -> object:
    """Aggregate output t/s against clients, one line per server."""
    from .plots import _pyplot, _save, available

    if not available():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in data["servers"]:
        ax.plot([lv["clients"] for lv in s["levels"]], [lv["output_tps"] for lv in s["levels"]], marker="o",
                label=s["server"])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("aggregate output tokens/s")
    ax.set_xscale("log", base=2)
    ax.set_title(f"glm-bench serve · {Path(data['model']).name}", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
