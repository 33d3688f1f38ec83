"""glm-bench: result files, raw peers, roofline, honest repetitions, and a regression gate that fails on a slowdown
but not on noise."""

import copy
import json
import subprocess
import sys

import pytest

from glmkit.benchmarks import compare, report, roofline
from glmkit.benchmarks import run as bench

PNG = b"\x89PNG\r\n\x1a\n"


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


def test_result_file_has_the_schema(tiny_run):
    data = report.load_results(tiny_run)
    assert data["schema_version"] == bench.SCHEMA_VERSION and data["environment"]["cores"] >= 1
    ov, ref = data["results"]
    assert ov["backend"] == "openvino" and ov["precision"] == "fp16" and ref["role"] == "reference"
    for metric in ("decode_tps", "prefill_tps", "ttft_ms", "tpot_ms_p50", "tpot_ms_p90", "peak_rss_mb"):
        s = ov["speed"][metric]
        assert s["n"] == 5 and s["min"] <= s["p25"] <= s["median"] <= s["p75"] <= s["max"]
    sp = ov["speedup_vs_reference"]
    assert sp["p25"] <= sp["median"] <= sp["p75"]
    q = ov["quality"]  # fp16 IR of fp16 weights: the reference's predictions, up to near-ties in OpenVINO's kernels
    assert q["top1_agreement"] >= 0.99 and abs(q["perplexity"] / q["reference_perplexity"] - 1) < 0.01


def test_raw_engine_is_measured_beside_glmkit(tiny_run):
    ov = report.load_results(tiny_run)["results"][0]
    assert ov["raw"]["decode_tps"]["n"] == 5 and ov["raw"]["ttft_ms"]["median"] > 0
    pairs = zip(ov["speed"]["decode_tps"]["values"], ov["raw"]["decode_tps"]["values"])
    assert ov["glmkit_vs_raw"]["values"] == pytest.approx([g / r for g, r in pairs])


def test_roofline_is_bandwidth_over_weight_bytes(tiny_run, ov_fp16):
    data = report.load_results(tiny_run)
    bw = data["environment"]["bandwidth_gbs"]
    assert 0.5 < bw < 2000
    for r in data["results"]:
        roof = r["roofline"]
        assert roof["ceiling_tps"] == pytest.approx(bw * 1e9 / roof["weight_bytes_per_token"])
        assert roof["percent_of_ceiling"] == pytest.approx(100 * r["speed"]["decode_tps"]["median"]
                                                           / roof["ceiling_tps"])


def _hf_bytes_without_embedding(path, per_param: int) -> int:
    from glmkit.sources import checkpoint

    ckpt = checkpoint.open_checkpoint(path)
    return sum(t.numel() * per_param for name, t in ckpt.tensors() if "embed_tokens" not in name)


def test_weight_bytes_per_token_excludes_the_embedding(ov_fp16, tmp_path):
    """A decode step reads every weight but only one embedding row: f32 GGUF = the source's fp32 bytes without the
    embedding, exactly; the fp16 IR = half of that (its few norm vectors stay f32, hence the tolerance)."""
    from glmkit.convert.gguf import to_gguf
    from glmkit.sources import embedded

    src = embedded.glm4_tiny_path()
    expected = _hf_bytes_without_embedding(src, 4)
    f32 = to_gguf("glm4-tiny", tmp_path / "t.gguf", outtype="f32", verify=False, quiet=True)
    assert roofline.weight_bytes_per_token(f32, "llamacpp") == expected
    assert roofline.weight_bytes_per_token(ov_fp16, "openvino") == pytest.approx(expected / 2, rel=0.02)


def test_reports_are_written_beside_the_json(tiny_run):
    for suffix in (".md", ".csv"):
        assert tiny_run.with_suffix(suffix).stat().st_size > 100
    for plot in ("decode", "quality"):
        assert (tiny_run.parent / f"tiny-{plot}.png").read_bytes()[:8] == PNG


def test_repetitions_use_different_prompts():
    from glmkit.runtimes import load

    rt = load("glm4-tiny")
    ps = bench.prompts(rt, 6, 64)
    assert len({tuple(p) for p in ps}) == 6 and all(len(p) == 64 for p in ps)


def _slowed(data: dict, raw_too: bool, factor: float = 0.8) -> dict:
    """data with every glmkit decode repetition `factor` as fast (and the raw engine's too: the engine slowed)."""
    slow = copy.deepcopy(data)
    ref = next(r for r in slow["results"] if r.get("role") == "reference")
    for res in slow["results"]:
        if res is ref:
            continue  # the reference did not slow down
        for summary in [res["speed"]["decode_tps"]] + ([res["raw"]["decode_tps"]] if raw_too else []):
            summary.update(bench.summarize([v * factor for v in summary["values"]]))
        res["speedup_vs_reference"] = bench.ratio(res["speed"]["decode_tps"], ref["speed"]["decode_tps"])
        res["glmkit_vs_raw"] = bench.ratio(res["speed"]["decode_tps"], res["raw"]["decode_tps"])
    return slow


def _measured(seed: int, glmkit=55.0, raw=55.0, reference=16.0, isa=("avx2", "avx512f", "avx512_bf16"),
              reference_dtype="bfloat16") -> dict:
    """A result file with the spreads measured on a shared 2-core VM: each round moves every config together by up
    to ±8 % (the machine's slow spells), each repetition by up to ±4 % more on its own; 9 repetitions."""
    import random

    rng = random.Random(seed)
    rounds = [1 + rng.uniform(-0.08, 0.08) for _ in range(9)]

    def reps(tps):
        return bench.summarize([tps * m * (1 + rng.uniform(-0.04, 0.04)) for m in rounds])

    cfg = {"label": "bench-int8/openvino", "prompt_tokens": 128, "speed": {"decode_tps": reps(glmkit)},
           "raw": {"decode_tps": reps(raw)}}
    ref = {"label": "reference/bench-bf16", "prompt_tokens": 128, "role": "reference",
           "speed": {"decode_tps": reps(reference)}}
    cfg["glmkit_vs_raw"] = bench.ratio(cfg["speed"]["decode_tps"], cfg["raw"]["decode_tps"])
    cfg["speedup_vs_reference"] = bench.ratio(cfg["speed"]["decode_tps"], ref["speed"]["decode_tps"])
    return {"schema_version": bench.SCHEMA_VERSION, "environment": {"cpu": "cpu A", "threads": 2, "isa": list(isa)},
            "settings": {"reps": 9, "gen": 32, "reference_dtype": reference_dtype}, "results": [cfg, ref]}


def test_noise_of_that_size_is_no_regression():
    for seed in range(20):
        assert not [f for f in compare.compare(_measured(seed), _measured(seed + 100)) if f.regressed]


def test_the_scatter_of_a_loaded_machine_is_no_regression():
    """Measured in a fresh-clone CI run with `yes > /dev/null` keeping one of the two cores busy: bench q4_k_m's
    glmkit/raw ratios scattered 0.68–1.32 and their median fell 11.5 % below a quiet baseline — the quartile rule
    alone called it a regression; the rank test does not (p = 0.075), while every real slowdown above passes it."""
    base = bench.summarize([0.961, 0.971, 1.0, 0.981, 1.051])
    cur = bench.summarize([0.827, 0.952, 1.322, 0.683, 0.868])
    f = compare._judge("bench-q4_k_m", "vs_raw", base, cur, True, 0.10)
    assert f.change < -0.10 and cur["p75"] < base["p25"] and not f.regressed
    assert compare.worse_p(base["values"], cur["values"], True) == pytest.approx(19 / 252)
    assert compare.worse_p(base["values"], [v * 0.8 for v in base["values"]], True) == pytest.approx(1 / 252)


def test_a_doctored_20_percent_slowdown_of_glmkit_fails(tmp_path):
    data = _measured(1)
    report.save_results(data, tmp_path / "a.json")
    report.save_results(_slowed(_measured(2), raw_too=False), tmp_path / "slow.json")
    r = glm_bench("compare", tmp_path / "a.json", tmp_path / "slow.json", "--max-regression", "10%")
    assert r.returncode == 1 and "REGRESSION" in r.stdout
    assert "vs_raw" in {f.metric for f in compare.compare(data, _slowed(_measured(2), raw_too=False)) if f.regressed}


def test_the_drift_between_two_runs_of_one_commit_is_no_regression():
    """Two real runs of one commit minutes apart on the shared CI runner: bench int8's speed-up over the reference
    fell 16.7 % with every repetition apart (the machine's load moves torch and OpenVINO differently); glmkit over
    its raw engine moved 3 %. The speed-up's own margin (SPEEDUP_DRIFT) lets that pass."""
    drifted = _slowed(_measured(2), raw_too=True, factor=0.833)
    assert not [f for f in compare.compare(_measured(1), drifted) if f.regressed]
    assert [f.change < -0.10 for f in compare.compare(_measured(1), drifted) if f.metric == "speedup"] == [True]


def test_a_doctored_35_percent_slowdown_of_the_engine_fails():
    """The raw engine slowed as much as glmkit: only the speed-up over the reference, measured in the same rounds,
    can tell — and absolute decode t/s when asked for."""
    data, slow = _measured(1), _slowed(_measured(2), raw_too=True, factor=0.65)
    assert {f.metric for f in compare.compare(data, slow) if f.regressed} == {"speedup"}
    assert {f.metric for f in compare.compare(data, slow, absolute=True) if f.regressed} >= {"speedup", "decode_tps"}


@pytest.mark.parametrize("change", [{"reference_dtype": "float16"}, {"isa": ("avx2", "avx512f", "avx512_fp16")}])
def test_speedups_are_not_judged_against_a_reference_run_another_way(change, tmp_path):
    """An fp16 reference on one CPU and bf16 on another is a different yardstick: the speed-up is shown, not
    judged, and one line says to refresh the baseline; glmkit over the raw engine is still judged."""
    base, cur = _measured(1, **change), _slowed(_measured(2), raw_too=True)
    findings = compare.compare(base, cur)
    assert not [f for f in findings if f.regressed]
    assert [f.judged for f in findings if f.metric == "speedup"] == [False]
    assert [f.judged for f in findings if f.metric == "vs_raw"] == [True]
    report.save_results(base, tmp_path / "a.json")
    report.save_results(cur, tmp_path / "b.json")
    r = glm_bench("compare", tmp_path / "a.json", tmp_path / "b.json")
    refusals = [ln for ln in r.stdout.splitlines() if ln.startswith("speed-ups over the reference not judged")]
    assert r.returncode == 0 and len(refusals) == 1 and "glm-bench ci --update-baseline" in refusals[0]


# -- the gate's rules on hand-made result files: deterministic ---------------------------------------------------

def _summary(median: float, spread: float = 0.02) -> dict:
    return bench.summarize([median * (1 + k * spread) for k in (-2, -1, 0, 1, 2)])


def _file(config_tps: float, reference_tps: float, cpu: str = "cpu A", top1: float = 0.95, kl: float = 0.01) -> dict:
    cfg = {"label": "m/openvino", "prompt_tokens": 128, "speed": {"decode_tps": _summary(config_tps)},
           "quality": {"perplexity": 20.0, "top1_agreement": top1, "mean_kl": kl}}
    ref = {"label": "reference/m-bf16", "prompt_tokens": 128, "role": "reference",
           "speed": {"decode_tps": _summary(reference_tps)}}
    cfg["speedup_vs_reference"] = bench.ratio(cfg["speed"]["decode_tps"], ref["speed"]["decode_tps"])
    return {"environment": {"cpu": cpu, "threads": 2}, "results": [cfg, ref]}


def _regressed(base: dict, cur: dict, absolute: bool = True) -> set:
    return {(f.key.split("@")[0], f.metric) for f in compare.compare(base, cur, absolute=absolute) if f.regressed}


def test_an_in_run_ratio_catches_a_slowdown_the_machine_did_not_cause():
    assert _regressed(_file(50, 12), _file(35, 12)) == {("m/openvino", "decode_tps"), ("m/openvino", "speedup")}
    assert _regressed(_file(50, 12), _file(35, 12), absolute=False) == {("m/openvino", "speedup")}


def test_a_slower_machine_moves_absolute_figures_but_not_the_ratio():
    assert _regressed(_file(50, 12), _file(40, 9.6)) == {("m/openvino", "decode_tps")}
    assert _regressed(_file(50, 12), _file(40, 9.6), absolute=False) == set()


def test_the_reference_is_a_control_not_a_gate():
    assert _regressed(_file(50, 12), _file(50, 9)) == set()  # faster ratio, slower torch: nothing of glmkit's


def test_across_machines_only_ratios_are_judged():
    assert _regressed(_file(50, 12), _file(25, 6, cpu="cpu B")) == set()
    assert _regressed(_file(50, 12), _file(25, 12, cpu="cpu B")) == {("m/openvino", "speedup")}
    assert _regressed(_file(50, 12), _file(42, 12, cpu="cpu B")) == set()  # −16 %: within the speed-up's drift


def test_quality_is_gated_and_rounding_is_not():
    assert _regressed(_file(50, 12), _file(50, 12, top1=0.80)) == {("m/openvino", "top1_agreement")}
    assert _regressed(_file(50, 12, kl=1e-7), _file(50, 12, kl=6e-7)) == set()
    assert _regressed(_file(50, 12), _file(50, 12, kl=0.02)) == {("m/openvino", "mean_kl")}


def test_report_markdown_and_csv(tiny_run):
    md = glm_bench("report", tiny_run).stdout
    assert md.count("\n| ") >= 3 and "decode_tps" in md and "GB/s" in md
    csv = glm_bench("report", tiny_run, "--csv").stdout.splitlines()
    assert csv[0].startswith("label,precision") and len(csv) == 3


def test_bad_result_file_is_one_line(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"schema_version": 99}))
    r = glm_bench("report", tmp_path / "x.json")
    assert r.returncode == 2 and "schema version 99" in r.stderr and "Traceback" not in r.stderr


def test_bad_run_input_is_one_line(tmp_path):
    r = glm_bench("run", tmp_path / "missing.gguf")
    assert r.returncode == 2 and "no such GGUF file" in r.stderr and "Traceback" not in r.stderr
    r = glm_bench("run", "glm4-tiny", "--prompt-lengths", "12x")
    assert r.returncode == 2 and "token counts separated by commas" in r.stderr and "Traceback" not in r.stderr


def test_ci_suite_writes_reports_and_gates_on_its_baseline(tmp_path, monkeypatch, glmkit_cache):
    """The `glm-bench ci` machinery on a one-model suite (the full suite runs in .ci/run): first run makes the
    baseline, the second compares with it; a baseline claiming far better quality makes it fail."""
    from glmkit.benchmarks import suite

    # int4, not int8: int8's KL on glm4-tiny is ~1e-4 on some CPUs, at compare's KL floor, where a baseline that
    # claims 1e-6 is floored to 1e-4 and the KL gate rightly sees no regression (int4: KL ~7e-3, clear of it)
    monkeypatch.setattr(suite, "SUITE", [("glm4-tiny", [("tiny-int4", "openvino", {"weight_format": "int4"})])])
    monkeypatch.setattr(suite, "SETTINGS", {"prompt_lengths": (32,), "gen": 8, "reps": 3, "warmup": 1})
    base = tmp_path / "baseline.json"
    with pytest.raises(Exception, match="--update-baseline"):
        suite.ci(tmp_path / "none", base, quiet=True)
    suite.ci(tmp_path / "a", base, update_baseline=True, work=tmp_path / "art", quiet=True)
    data, findings = suite.ci(tmp_path / "b", base, work=tmp_path / "art", quiet=True)
    assert {p.name for p in (tmp_path / "b").iterdir()} == {"results.json", "results.md", "results.csv",
                                                            "results-decode.png", "results-quality.png",
                                                            "compare.txt"}
    assert all(r["gate"] == "quality" for r in data["results"]) and not any(f.regressed for f in findings)
    better = report.load_results(base)
    q = better["results"][0]["quality"]
    q["mean_kl"], q["perplexity"] = 1e-6, q["perplexity"] / 2
    report.save_results(better, base)
    _, findings = suite.ci(tmp_path / "c", base, work=tmp_path / "art", quiet=True)
    assert {f.metric for f in findings if f.regressed} == {"mean_kl", "perplexity"}


def test_glm_bench_serve_loads_glm_serve_and_llama_cpp_server_alike(tmp_path, glmkit_cache):
    """Every client's every turn answered by both servers (no 429, no cut-off answers), tokens counted from the
    servers' own usage, and the scaling column relative to one client. llama.cpp's C++ llama-server joins them
    when one is on PATH, and --in-process drives the same runtime from threads without HTTP; a --llama-server
    that is not one is a clear error before any server starts."""
    import shutil

    from glmkit.convert.gguf import to_gguf

    gguf = to_gguf("glm4-tiny", tmp_path / "tiny.gguf", outtype="q8_0", verify=False, quiet=True)
    r = glm_bench("serve", gguf, "--llama-server", tmp_path / "nowhere", "-q", "-o", tmp_path / "x.json")
    assert r.returncode == 2 and "--llama-server" in r.stderr and "Traceback" not in r.stderr
    r = glm_bench("serve", gguf, "--clients", "1,2", "--turns", "2", "--answer-tokens", "8", "--n-ctx", "1024",
                  "--in-process", "-q", "-o", tmp_path / "serve.json")
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "serve.json").read_text())
    peers = ["llama-server"] if shutil.which("llama-server") else []
    assert [s["server"] for s in data["servers"]] == ["glm-serve", *peers, "llama_cpp.server", "engine in-process"]
    for s in data["servers"]:
        assert [(lv["clients"], lv["turns"], lv["errors"]) for lv in s["levels"]] == [(1, 2, 0), (2, 4, 0)]
        assert all(0 < lv["output_tokens"] <= lv["turns"] * 8 for lv in s["levels"])
        assert s["levels"][0]["scaling"] == 1.0
    assert "| glm-serve | 2 |" in (tmp_path / "serve.md").read_text()


def test_glm_bench_kv_measures_the_8bit_caches_at_length(tmp_path, glmkit_cache):
    """Bytes per 1K tokens from the file's shape, and KL against an f32 cache by position band: an f16 cache all but
    free, an 8-bit cache (llama.cpp q8_0, OpenVINO u8) measurably not — so the cache type really was applied."""
    from glmkit.convert.gguf import to_gguf
    from glmkit.convert.openvino import to_openvino

    models = [to_gguf("glm4-tiny", tmp_path / "t.gguf", outtype="f32", verify=False, quiet=True),
              to_openvino("glm4-tiny", tmp_path / "ov", weight_format="fp16", verify=False, quiet=True)]
    for model, eight in zip(models, ("q8_0", "u8")):
        r = glm_bench("kv", model, "--length", "1024", "-o", tmp_path / f"{eight}.json")
        assert r.returncode == 0, r.stderr
        data = json.loads((tmp_path / f"{eight}.json").read_text())
        caches = {c["kv_cache"]: c for c in data["caches"]}
        assert set(caches) == {"f16", eight}
        f16, small = caches["f16"], caches[eight]
        assert f16["kv_bytes_per_1k_tokens"] == 4 * 2 * 64 * 2 * 2 * 1024  # glm4-tiny: 4 layers, 2 KV heads of 64
        assert small["kv_bytes_per_1k_tokens"] < 0.55 * f16["kv_bytes_per_1k_tokens"]
        for a, b in zip(f16["bands"], small["bands"]):
            assert a["mean_kl"] < 1e-5 < b["mean_kl"] < 1e-2 and b["top1_agreement"] > 0.9
