"""One conversion's cost as a laptop feels it: wall time, peak anonymous memory and peak extra disk.

Runs `glm-convert ARGS…` in a child process and samples it every half second: anonymous memory (RssAnon + VmSwap
from /proc, not RSS — a memory-mapped source's pages are the kernel's to drop) and the bytes allocated under the
output's folder (the output, its temporary and the stage beside it; sparse files count what they hold). Peak extra
disk is the peak less the finished output. Appends one JSON line to OUT_JSONL (the table in docs/results.md is
made from those lines by `--table`).

    python scripts/measure_conversion.py results.jsonl synthetic:glm4:glm-4-32b --to gguf --outtype iq4_xs \
        --imatrix embedded -o /data/glm-4-32b-iq4_xs.gguf
    python scripts/measure_conversion.py results.jsonl --table
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def anonymous_bytes(pid: int) -> int:
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return 0
    return sum(int(fields.get(k, "0 kB").split()[0]) * 1024 for k in ("RssAnon", "VmSwap"))


def allocated_bytes(folder: Path, name: str) -> int:
    """Bytes allocated to the output and its temporaries/stage (files whose name starts with the output's)."""
    total = 0
    for entry in folder.iterdir():
        if not entry.name.startswith(name) and not entry.name.startswith("." + name):
            continue
        files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
        for f in files:
            try:
                total += f.lstat().st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def measure(args: list[str]) -> dict:
    out = Path(args[args.index("-o") + 1]).absolute()
    folder, name = out.parent, out.name
    folder.mkdir(parents=True, exist_ok=True)
    peak = {"anon": 0, "disk": 0}
    proc = subprocess.Popen([sys.executable, "-m", "glmkit.convert", *args])
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["anon"] = max(peak["anon"], anonymous_bytes(proc.pid))
            peak["disk"] = max(peak["disk"], allocated_bytes(folder, name))
            time.sleep(0.5)

    t0 = time.perf_counter()
    threading.Thread(target=sample, daemon=True).start()
    rc = proc.wait()
    done.set()
    wall = time.perf_counter() - t0
    size = out.stat().st_size if out.is_file() else sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    manifest = out / "glmkit.json" if out.is_dir() else out.with_name(out.name + ".glmkit.json")
    m = json.loads(manifest.read_text()) if manifest.is_file() else {}
    v = m.get("verification", {})
    return {"args": args, "exit": rc, "wall_s": round(wall, 1), "peak_anon_gib": round(peak["anon"] / 2**30, 2),
            "output_bytes": size, "peak_extra_disk_bytes": max(0, peak["disk"] - size),
            "settings": m.get("settings"), "seconds": m.get("seconds"),
            "verification": {k: v.get(k) for k in ("reference", "top1_agreement", "mean_kl", "tokens", "skipped")
                             if k in v}, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = ["| conversion | wall (of which: steps) | peak anon. memory | output | peak extra disk | verification |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        v, args = r["verification"], r["args"]
        args = [a for i, a in enumerate(args) if a != "-o" and (i == 0 or args[i - 1] != "-o")]
        steps = {**(r.get("seconds") or {}), **((r.get("settings") or {}).get("seconds") or {})}
        steps_text = ", ".join(f"{k} {steps[k] / 60:.1f}" for k in ("load", "imatrix", "quantize", "verify")
                               if k in steps)
        check = (f"{v['reference']}: top-1 {v['top1_agreement']:.1%}, KL {v['mean_kl']:.4f}" if "mean_kl" in v
                 else v.get("skipped", "—"))
        lines.append(f"| `glm-convert {' '.join(args)}` | {r['wall_s'] / 60:.1f} min ({steps_text}) | "
                     f"{r['peak_anon_gib']:.2f} GiB | {r['output_bytes'] / 2**30:.2f} GiB | "
                     f"{r['peak_extra_disk_bytes'] / 2**20:.1f} MiB | {check} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[2] == "--table":
        print(table(Path(sys.argv[1])))
        return
    record = measure(sys.argv[2:])
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
