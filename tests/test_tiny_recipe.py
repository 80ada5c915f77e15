"""The shipped tiny CPU recipe really learns, and the model it trains proves the evaluation and
retrieval-head claims (slow: about 35 minutes on 2 cores; `pytest -m slow`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def proofs(tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny") / "run"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trained_tiny.py"), "--run", str(run), "--docs", "20"],
                          cwd=ROOT, capture_output=True, text=True, timeout=4 * 3600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run / "validation.json").read_text()), json.loads((run / "proofs" / "proofs.json").read_text())


@pytest.mark.slow
def test_tiny_recipe_learns_retrieval_and_serves_the_same(proofs):
    val, found = proofs
    for n in (128, 256, 512):
        assert val["before"][f"val/exact_match@{n}"] <= 0.02
        assert val["after"][f"val/exact_match@{n}"] >= 0.9
    trained, untrained = found["needles"]["trained"], found["needles"]["untrained"]
    assert all(trained[n] >= untrained[n] + 0.5 for n in ("128", "256", "512"))
    assert trained["2048"] < trained["512"]  # beyond the lengths it was trained on
    assert found["serving"]["same_predictions"] == found["serving"]["records"]


@pytest.mark.slow
def test_masking_the_detected_heads_costs_more_than_random_heads(proofs):
    """Measured (seed 0): the question score's top 2 heads take exact match 1.00 -> 0.00 where 2
    random ones leave 0.962 (top 3: 0.00 vs 0.905); the answer score without layer 0, top 3:
    0.942 vs 1.000 (its top heads, in layer 1, are redundant)."""
    _, found = proofs
    rows = found["heads"]["ablation"]["question"]["rows"]
    assert any(r["top_drop"] >= 2 * r["random_drop"] and r["top_drop"] > 0.2 for r in rows)
    rows = found["heads"]["ablation"]["answer, layer 0 excluded"]["rows"]
    assert any(r["top_drop"] >= 2 * r["random_drop"] and r["top_drop"] > 0 for r in rows)


@pytest.mark.slow
@pytest.mark.xfail(reason="issue 19: on the trained tiny model the question score's top head alone costs less than a "
                          "random one (0.892 vs 0.807 left: a random draw often hits a head every copy needs; >= 2x holds "
                          "at k=2 and 3), and the answer score's top heads (layer 1) are redundant", strict=False)
def test_masking_the_detected_heads_costs_twice_random_heads_at_every_k(proofs):
    _, found = proofs
    for name in ("question", "answer"):
        rows = found["heads"]["ablation"][name]["rows"]
        assert all(r["top_drop"] >= 2 * r["random_drop"] for r in rows)
