"""The child process of `--method autoround` (see autoround.py): `python -m glmkit.convert.autoround_worker JOB`.

It runs with PYTHONPATH and LLAMA_CPP_ROOT pointing at llama.cpp's vendored gguf-py and conversion code, and
imports nothing of glmkit's, so `gguf` here is that newer copy.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path


def main(job_path: str) -> None:
    from auto_round import AutoRound
    from auto_round.export.export_to_gguf import llama_cpp_conversion

    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    # llama.cpp's converter refuses GLM-4 tokenizers whose hash it has not recorded; glmkit writes the vocabulary
    # and the pre-tokenizer type itself afterwards, so the answer given here is never used.
    llama_cpp_conversion.get_conversion(job["source"])
    import conversion.base

    conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "glm4"
    t0 = time.perf_counter()
    fmt = f"gguf:{job['outtype']}"
    ar = AutoRound(job["source"], scheme=fmt, iters=job["iters"], nsamples=job["nsamples"], seqlen=job["seqlen"],
                   batch_size=min(4, job["nsamples"]), dataset=job["texts"], device_map="cpu")
    ar.quantize_and_save(job["work"], format=fmt)
    written = sorted(Path(job["work"]).rglob("*.gguf"))
    if len(written) != 1:
        sys.exit(f"AutoRound wrote {len(written)} GGUF files, expected one")
    shutil.move(str(written[0]), job["out"])
    done = {"method": "autoround", "auto_round": __import__("auto_round").__version__, "iters": job["iters"],
            "nsamples": job["nsamples"], "seqlen": job["seqlen"], "seconds": round(time.perf_counter() - t0, 1)}
    Path(job_path).with_name("autoround.done.json").write_text(json.dumps(done), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
