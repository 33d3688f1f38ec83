"""An artifact run as a laptop user runs it: glm-chat, glm-serve and glm-bench, each in its own process, with the
process's peak memory (resident, anonymous = RssAnon + VmSwap, and swap alone) sampled every half second.

  - glm-chat: one short question, greedy; the answer is recorded.
  - glm-serve: one streamed chat completion through the `openai` client with a ~1,000-token prompt: time to first
    token, decode tokens per second from the stream.
  - glm-bench run: glmkit's decode against the raw engine on the same file (the ratio the issue asks for).

    python scripts/measure_run.py /data/glm-4-32b-iq4_xs.gguf results.jsonl
    python scripts/measure_run.py results.jsonl --table
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

STATUS = ("VmRSS", "RssAnon", "VmSwap")


def _script(name: str) -> str:
    """A glmkit console script of this Python's environment."""
    return str(Path(sys.executable).parent / name)


def status_bytes(pid: int) -> dict[str, int]:
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return {}
    return {k: int(fields.get(k, "0 kB").split()[0]) * 1024 for k in STATUS}


class Watch:
    """Peak resident, anonymous (RssAnon + VmSwap) and swapped bytes of one process."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.peak = proc, {"rss": 0, "anon": 0, "swap": 0}
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.done.is_set() and self.proc.poll() is None:
            s = status_bytes(self.proc.pid)
            if s:
                self.peak["rss"] = max(self.peak["rss"], s["VmRSS"])
                self.peak["anon"] = max(self.peak["anon"], s["RssAnon"] + s["VmSwap"])
                self.peak["swap"] = max(self.peak["swap"], s["VmSwap"])
            time.sleep(0.5)

    def gib(self) -> dict[str, float]:
        self.done.set()
        return {f"peak_{k}_gib": round(v / 2**30, 2) for k, v in self.peak.items()}


def glm_chat(model: str) -> dict:
    t = time.perf_counter()
    proc = subprocess.Popen([_script("glm-chat"), model, "--prompt",
                             "In one sentence: why do laptops need small models?", "--max-new-tokens", "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = Watch(proc)
    out, err = proc.communicate()
    return {"exit": proc.returncode, "wall_s": round(time.perf_counter() - t, 1), "answer": out.strip()[-300:],
            "error": err.strip()[-300:] if proc.returncode else "", **watch.gib()}


def glm_serve(model: str, prompt: str) -> dict:
    import httpx
    from openai import OpenAI

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    proc = subprocess.Popen([_script("glm-serve"), model, "--host", "127.0.0.1", "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watch = Watch(proc)
    try:
        while True:
            if proc.poll() is not None:
                return {"exit": proc.returncode, "error": proc.stderr.read()[-300:] if proc.stderr else ""}
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        ready = time.perf_counter() - t
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=3600)
        t0 = time.perf_counter()
        first = last = None
        usage = None
        served = client.models.list().data[0].id
        for chunk in client.chat.completions.create(model=served, messages=[{"role": "user", "content": prompt}],
                                                    max_tokens=16, temperature=0, stream=True,
                                                    stream_options={"include_usage": True}):
            if chunk.choices and chunk.choices[0].delta.content:
                now = time.perf_counter()
                first = first or now
                last = now
            if chunk.usage:
                usage = chunk.usage
        n = usage.completion_tokens if usage else 0
        return {"ready_s": round(ready, 1), "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": n, "ttft_s": round((first or t0) - t0, 2),
                "decode_tok_s": round((n - 1) / (last - first), 2) if first and last and n > 1 and last > first
                else None, **watch.gib()}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def glm_bench(model: str, out: Path) -> dict:
    proc = subprocess.Popen([_script("glm-bench"), "run", model, "--prompt-lengths", "128",
                             "--gen", "16", "--reps", "2", "--warmup", "0", "--no-quality", "--no-roofline", "-q",
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = Watch(proc)
    _, err = proc.communicate()
    rows = json.loads(out.read_text()) if out.is_file() else {}
    return {"exit": proc.returncode, "error": err.strip()[-300:] if proc.returncode else "", "results": rows,
            **watch.gib()}


def table(path: Path) -> str:
    lines = ["| artifact | glm-chat peak anon. / RSS | glm-serve: TTFT (prompt), decode, peak anon. / RSS, swap | "
             "glm-bench run: decode t/s, glmkit ÷ raw engine, prefill t/s |", "|---|---|---|---|"]
    for line in path.read_text().splitlines():
        r = json.loads(line)
        c, s, b = r["glm_chat"], r["glm_serve"], r["glm_bench"]
        row = (b.get("results") or {}).get("results", [{}])[0]
        med = {k: (v or {}).get("median") for k, v in row.get("speed", {}).items()}.get
        lines.append(
            f"| {Path(r['model']).name} ({r['bytes'] / 2**30:.2f} GiB) | {c['peak_anon_gib']:.2f} / "
            f"{c['peak_rss_gib']:.2f} GiB | {s.get('ttft_s')} s ({s.get('prompt_tokens')} tokens), "
            f"{s.get('decode_tok_s')} t/s, {s.get('peak_anon_gib')} / {s.get('peak_rss_gib')} GiB, "
            f"{s.get('peak_swap_gib')} GiB | {med('decode_tps'):.2f}, "
            f"{(row.get('glmkit_vs_raw') or {}).get('median', 0):.3f}, {med('prefill_tps'):.1f} |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[2:] == ["--table"]:
        print(table(Path(sys.argv[1])))
        return
    model, log = sys.argv[1], Path(sys.argv[2])
    from glmkit.convert.calibration import calibration_text

    prompt = "Summarise this code in one line:\n" + calibration_text("embedded")[:3500]
    record = {"model": model, "bytes": os.path.getsize(model) if os.path.isfile(model) else None,
              "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
    for name, fn in (("glm_chat", lambda: glm_chat(model)), ("glm_serve", lambda: glm_serve(model, prompt)),
                     ("glm_bench", lambda: glm_bench(model, log.with_name(log.stem + "-bench.json")))):
        record[name] = fn()
        print(name, json.dumps(record[name])[:600], flush=True)
    with open(log, "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
