"""lm-evaluation-harness against glm-serve, as users run it (glm-bench eval): a log-likelihood multiple-choice
task through local-completions (echo, logprobs, the served model's own tokenizer through /tokenize) and a
generation task through local-chat-completions, offline, on benchmarks/tasks/. The harness's numbers are checked
against transformers itself on the source."""

import os

import numpy as np
import pytest

PY = os.environ.get("GLMKIT_LMEVAL_PYTHON")
pytestmark = pytest.mark.skipif(not PY, reason="GLMKIT_LMEVAL_PYTHON unset: the lm-eval venv is made by .ci/run")


def test_the_harness_scores_equal_transformers_on_the_source(tiny_artifacts):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from glmkit.benchmarks.harness import TASKS, evaluate
    from glmkit.sources.source import transformers_dir

    got = evaluate(tiny_artifacts["llamacpp"], [TASKS / "glm4-tiny-next.yaml", TASKS / "glm4-tiny-code.yaml"],
                   python=PY, samples=True, quiet=True, serve_flags=("--n-ctx", "1024"))
    source = transformers_dir("glm4-tiny")
    tok = Tokenizer.from_file(str(source / "tokenizer.json"))
    net = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32).eval()

    def loglik(context: str, continuation: str) -> float:
        """lm-eval's split: the context's tokens, then the rest of the whole text's (no special tokens)."""
        ctx = tok.encode(context, add_special_tokens=False).ids
        whole = tok.encode(context + continuation, add_special_tokens=False).ids
        with torch.no_grad():
            logp = torch.log_softmax(net(torch.tensor([whole])).logits[0].double(), -1)
        return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))

    records = got["samples"]["glm4_tiny_next"]
    assert len(records) == 8
    right = []
    for rec in records:
        doc = rec["doc"]
        want = [loglik(doc["context"], " " + c) for c in doc["choices"]]
        np.testing.assert_allclose([float(r[0][0]) for r in rec["resps"]], want, atol=2e-3, rtol=1e-4)
        right.append(float(np.argmax(want) == doc["answer"]))
        assert rec["acc"] == right[-1]
    assert got["scores"]["glm4_tiny_next"]["acc"] == pytest.approx(np.mean(right))
    # the code task's targets are the source's own greedy first lines: an f32 GGUF answers every one the same
    assert got["scores"]["glm4_tiny_code"]["exact_match"] == 1.0
    assert len(got["samples"]["glm4_tiny_code"]) == 8
