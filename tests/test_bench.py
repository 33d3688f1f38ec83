"""glm-bench: result files, honest repetitions, and a regression gate that fails on a slowdown but not on noise."""

import copy
import json
import subprocess
import sys

import pytest

from glmkit.benchmarks import compare, report
from glmkit.benchmarks import run as bench


@pytest.fixture(scope="module")
def ov_fp16(tmp_path_factory, glmkit_cache):
    from glmkit.convert.openvino import to_openvino

    return to_openvino("glm4-tiny", tmp_path_factory.mktemp("b") / "ov", weight_format="fp16", quiet=True)


def glm_bench(*args):
    return subprocess.run([sys.executable, "-m", "glmkit.benchmarks", *map(str, args)], capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def tiny_run(ov_fp16, tmp_path_factory):
    out = tmp_path_factory.mktemp("r") / "tiny.json"
    r = glm_bench("run", ov_fp16, "--prompt-lengths", "64", "--gen", "16", "--reps", "5", "--reference",
                  "glm4-tiny", "-o", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory, glmkit_cache):
    """Two genuine runs of the same commit on the 0.47 B bench shape: timings long enough to be more than jitter
    (a 3.5 M model prefills 64 tokens in ~7 ms, where scheduling noise alone moves figures by 20 %)."""
    from glmkit.convert.openvino import to_openvino

    out = tmp_path_factory.mktemp("gate")
    ir = to_openvino("synthetic:glm4:bench", out / "bench-int8", weight_format="int8", verify=False, quiet=True)
    files = []
    for name in ("a.json", "b.json"):
        r = glm_bench("run", ir, "--prompt-lengths", "128", "--gen", "24", "--reps", "5", "--reference",
                      "synthetic:glm4:bench", "--no-quality", "-o", out / name)
        assert r.returncode == 0, r.stderr
        files.append(out / name)
    return files


def test_result_file_has_the_schema(tiny_run):
    data = report.load_results(tiny_run)
    assert data["schema_version"] == bench.SCHEMA_VERSION and data["environment"]["cores"] >= 1
    ov, ref = data["results"]
    assert ov["backend"] == "openvino" and ov["precision"] == "fp16" and ref["label"].startswith("reference/")
    for metric in ("decode_tps", "prefill_tps", "ttft_ms", "tpot_ms_p50", "tpot_ms_p90", "peak_rss_mb"):
        s = ov["speed"][metric]
        assert s["n"] == 5 and s["min"] <= s["p25"] <= s["median"] <= s["p75"] <= s["max"]
    assert ov["speedup_vs_reference"]["median"] > 0
    q = ov["quality"]  # fp16 IR of fp16 weights: the reference's own predictions
    assert q["top1_agreement"] == 1.0 and abs(q["perplexity"] - q["reference_perplexity"]) < 0.01


def test_repetitions_use_different_prompts():
    from glmkit.runtimes import load

    rt = load("glm4-tiny")
    ps = bench.prompts(rt, 6, 64)
    assert len({tuple(p) for p in ps}) == 6 and all(len(p) == 64 for p in ps)


def test_two_genuine_runs_pass_the_gate(results):
    r = glm_bench("compare", *results, "--max-regression", "10%")
    assert r.returncode == 0, r.stdout
    assert "no regression" in r.stdout


def test_a_doctored_20_percent_slowdown_fails(results, tmp_path):
    data = report.load_results(results[0])
    slow = copy.deepcopy(data)
    for res in slow["results"]:
        if res["label"].startswith("reference/"):
            continue  # the reference did not slow down: the in-run ratio must catch it too
        for k in ("median", "p25", "p75", "min", "max"):
            res["speed"]["decode_tps"][k] *= 0.8
            res["speedup_vs_reference"][k] *= 0.8
    report.save_results(slow, tmp_path / "slow.json")
    r = glm_bench("compare", results[0], tmp_path / "slow.json", "--max-regression", "10%")
    assert r.returncode == 1 and "REGRESSION" in r.stdout
    regressed = {f.metric for f in compare.compare(report.load_results(results[0]), slow) if f.regressed}
    assert regressed == {"decode_tps", "speedup"}


def test_report_markdown_and_csv(tiny_run):
    md = glm_bench("report", tiny_run).stdout
    assert md.count("\n| ") >= 3 and "decode_tps" in md
    csv = glm_bench("report", tiny_run, "--csv").stdout.splitlines()
    assert csv[0].startswith("label,precision") and len(csv) == 3


def test_bad_result_file_is_one_line(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"schema_version": 99}))
    r = glm_bench("report", tmp_path / "x.json")
    assert r.returncode == 2 and "schema version 99" in r.stderr and "Traceback" not in r.stderr
