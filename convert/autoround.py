"""`--method autoround`: Intel's AutoRound (the successor of intel-extension-for-transformers' weight-only path)
tunes the rounding of llama.cpp k-quants on calibration text and packs them itself; glmkit then writes its own
GGUF metadata around AutoRound's tensors (gguf_file.rewrite).

AutoRound's GGUF path imports a copy of llama.cpp's conversion code that needs a gguf-py newer than PyPI's, and
stops on llama.cpp's pre-tokenizer hash check. So it runs in a child process (autoround_worker.py) against the
conversion code and gguf-py of the llama.cpp that llama-cpp-python vendors, taken from that package's source
distribution once into glmkit's cache, with the hash check answered: glmkit replaces the vocabulary anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from glmkit.glm4.errors import GlmkitError

VERSION = "0.16.1"
# the GGUF file types AutoRound exports that glmkit offers (its q4_1/q5_1 are not offered by glmkit)
TYPES = ("q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_0", "q4_k_m", "q4_k_s", "q4_0", "q3_k_l", "q3_k_m", "q3_k_s",
         "q2_k_s")
DEFAULT_ITERS = 50  # AutoRound's own default is 200; 50 already gave most of the gain on glm4-tiny
NSAMPLES, SEQLEN = 8, 512


def check(outtype: str, iters: int) -> None:
    try:
        have = version("auto-round")
    except PackageNotFoundError:
        raise GlmkitError(f"--method autoround needs auto-round {VERSION}: pip install \"glmkit[autoround]\"") from None
    if have != VERSION:
        raise GlmkitError(f"--method autoround is tested with auto-round {VERSION}, {have} is installed: "
                          f"pip install auto-round=={VERSION}")
    if outtype not in TYPES:
        raise GlmkitError(f"--method autoround writes {', '.join(TYPES)}; not {outtype} (for IQ types use "
                          "--imatrix)")
    if iters < 0:
        raise GlmkitError(f"--iters {iters}: 0 (AutoRound's optimized rounding) or more tuning steps")


def llama_cpp_tree() -> Path:
    """llama.cpp's conversion code and gguf-py as vendored by the installed llama-cpp-python, from its source
    distribution on PyPI (fetched by pip once, kept in glmkit's cache)."""
    from glmkit.common.atomic import atomic_output
    from glmkit.common.paths import cache_root

    v = version("llama-cpp-python")
    out = cache_root() / f"llama.cpp-from-llama-cpp-python-{v}"
    if (out / "conversion" / "__init__.py").is_file():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            "-q", "-d", tmp, f"llama-cpp-python=={v}"],
                           capture_output=True, text=True)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if r.returncode or not archives:
            tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise GlmkitError(f"--method autoround needs llama.cpp's conversion code from llama-cpp-python {v}'s "
                              f"source distribution, and pip could not fetch it ({tail})")
        prefix = f"{archives[0].name[:-len('.tar.gz')]}/vendor/llama.cpp/"
        with tarfile.open(archives[0]) as tar, atomic_output(out, force=True) as staged:
            members = [m for m in tar.getmembers() if m.name.startswith((prefix + "conversion/",
                                                                         prefix + "gguf-py/"))]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(staged, members=members, filter="data")
    return out


def quantize(source_dir: Path, outtype: str, iters: int, texts: list[str], out: Path, stage: Path,
             quiet: bool = False) -> dict:
    """AutoRound's GGUF of `source_dir` (a transformers-native checkpoint) at `out`; returns its record."""
    tree = llama_cpp_tree()
    job = stage / "autoround.json"
    job.write_text(json.dumps({"source": str(source_dir), "outtype": outtype, "iters": iters, "texts": texts,
                               "nsamples": NSAMPLES, "seqlen": SEQLEN, "work": str(stage / "autoround"),
                               "out": str(out)}), encoding="utf-8")
    env = {**os.environ, "LLAMA_CPP_ROOT": str(tree),
           "PYTHONPATH": os.pathsep.join([str(tree / "gguf-py"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    r = subprocess.run([sys.executable, "-m", "glmkit.convert.autoround_worker", str(job)], env=env,
                       capture_output=quiet, text=True)
    if r.returncode or not out.is_file():
        tail = ((r.stderr or "").strip().splitlines() or ["see the output above"])[-1]
        raise GlmkitError(f"AutoRound failed for {outtype} ({tail})")
    return json.loads((stage / "autoround.done.json").read_text())
