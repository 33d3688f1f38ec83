"""Kill real conversions with SIGKILL at random points and check that nothing is left behind.

After each kill the target holds nothing or the complete previous output; after the next complete run no hidden
temporaries (`.NAME.*`) remain beside it. glm-convert runs as a user runs it (a subprocess); kinds: GGUF k-quant,
OpenVINO int4, and --to hf from the original chatglm format, on tiny shapes.

    python scripts/kill_campaign.py --kills 24 --seed 1 --workdir /tmp/kills
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

KINDS = {
    "gguf-q4_k_m": (["synthetic:glm4:tiny", "--to", "gguf", "--outtype", "q4_k_m"], "m.gguf"),
    "openvino-int4": (["synthetic:glm4:tiny", "--to", "openvino", "--weight-format", "int4"], "ov"),
    "hf-from-chatglm": (["synthetic:chatglm:tiny", "--to", "hf"], "hf"),
}
REQUIRED = {"m.gguf": (), "ov": ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "glmkit.json"),
            "hf": ("config.json", "tokenizer.json", "glmkit.json")}


def _default_signals():
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def convert(kind: str, workdir: Path, env: dict, kill_after: float | None = None) -> int | None:
    """Run one conversion with --force; SIGKILL it after `kill_after` seconds (None: let it finish)."""
    args, name = KINDS[kind]
    cmd = [sys.executable, "-m", "glmkit.convert", *args, "-o", str(workdir / name), "--force", "-q"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                         preexec_fn=_default_signals)
    try:
        p.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        return None
    if p.returncode != 0:
        raise RuntimeError(f"{kind} failed: {p.stderr.read().decode()[-500:]}")
    return p.returncode


def complete(workdir: Path, name: str) -> bool:
    """The target holds a whole output: its manifest names it and every file it needs is there."""
    from glmkit.common import manifest

    out = workdir / name
    if name.endswith(".gguf"):
        return out.is_file() and out.read_bytes()[:4] == b"GGUF" and manifest.read(out) is not None
    return out.is_dir() and all((out / f).is_file() for f in REQUIRED[name])


def hidden(workdir: Path, name: str) -> list[str]:
    return sorted(p.name for p in workdir.glob(f".{name}.*"))


def campaign(kills: int, seed: int, workdir: Path, kinds=tuple(KINDS)) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GLMKIT_CACHE": str(workdir / "cache"), "HF_HUB_OFFLINE": "1"}
    rng = random.Random(seed)
    durations = {}
    for kind in kinds:  # a first complete run: the previous output the kills must not damage, and a duration
        t = time.perf_counter()
        convert(kind, workdir, env)
        durations[kind] = time.perf_counter() - t
    rows = []
    for i in range(kills):
        kind = kinds[i % len(kinds)]
        name = KINDS[kind][1]
        at = rng.uniform(0.3, durations[kind])
        finished = convert(kind, workdir, env, kill_after=at) is not None
        rows.append({"kind": kind, "kill_at_s": round(at, 2), "finished_first": finished,
                     "target_complete": complete(workdir, name), "hidden_after_kill": hidden(workdir, name)})
    left = {}
    for kind in kinds:  # the next complete run cleans up whatever the kills left
        convert(kind, workdir, env)
        name = KINDS[kind][1]
        left[kind] = hidden(workdir, name) + [p.name for p in (workdir / "cache").rglob("*.partial")]
    return {"kills": rows, "hidden_after_next_run": left, "durations_s": {k: round(v, 1) for k, v in durations.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=24)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", default="kill-campaign")
    args = p.parse_args()
    result = campaign(args.kills, args.seed, Path(args.workdir))
    print(json.dumps(result, indent=2))
    bad = [r for r in result["kills"] if not r["target_complete"]]
    bad += [k for k, v in result["hidden_after_next_run"].items() if v]
    killed = sum(not r["finished_first"] for r in result["kills"])
    print(f"{killed} kills; damaged targets: {sum(not r['target_complete'] for r in result['kills'])}; leftovers after "
          f"the next run: {sum(len(v) for v in result['hidden_after_next_run'].values())}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
