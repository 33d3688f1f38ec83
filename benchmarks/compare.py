"""glm-bench compare: is CURRENT slower than BASELINE beyond noise?

A figure regresses when its median is worse by more than `max_regression` AND the two runs' interquartile ranges
do not overlap (the current p75 is worse than the baseline p25). The first rule ignores small drifts, the second
a noisy machine; quartiles rather than min/max, so one outlier repetition decides nothing. Ratios measured inside one run (a config against the reference measured in
the same run) are judged the same way and survive a change of machine.
"""

from __future__ import annotations

from dataclasses import dataclass

# metric → True when higher is better
METRICS = {"decode_tps": True, "prefill_tps": True, "ttft_ms": False}


@dataclass
class Finding:
    key: str
    metric: str
    baseline: float
    current: float
    change: float        # relative, signed so that negative is worse
    regressed: bool

    def line(self) -> str:
        mark = "REGRESSION" if self.regressed else "ok"
        return f"{mark:10} {self.key:40} {self.metric:12} {self.baseline:10.2f} → {self.current:10.2f} ({self.change:+.1%})"


def _key(r: dict) -> str:
    return f"{r['label']}@{r['prompt_tokens']}"


def _judge(key: str, metric: str, base: dict, cur: dict, higher: bool, max_regression: float) -> Finding:
    b, c = base["median"], cur["median"]
    change = (c - b) / b if higher else (b - c) / b
    apart = cur["p75"] < base["p25"] if higher else cur["p25"] > base["p75"]
    return Finding(key, metric, b, c, change, change < -max_regression and apart)


def compare(baseline: dict, current: dict, max_regression: float = 0.10) -> list[Finding]:
    """Findings for every config and metric present in both result files."""
    base = {_key(r): r for r in baseline["results"]}
    findings = []
    for r in current["results"]:
        b = base.get(_key(r))
        if b is None:
            continue
        for metric, higher in METRICS.items():
            if metric in r["speed"] and metric in b["speed"]:
                findings.append(_judge(_key(r), metric, b["speed"][metric], r["speed"][metric], higher,
                                       max_regression))
        if r.get("speedup_vs_reference") and b.get("speedup_vs_reference"):
            findings.append(_judge(_key(r), "speedup", b["speedup_vs_reference"], r["speedup_vs_reference"], True,
                                   max_regression))
    return findings
