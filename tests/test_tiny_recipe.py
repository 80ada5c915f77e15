"""The shipped tiny CPU recipe really learns, and the model it trains proves the evaluation and
retrieval-head claims (slow: about half an hour on 2 cores; `pytest -m slow`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
@pytest.mark.xfail(reason="issue 20: the recipe is not yet at >= 0.90 exact match (see the issue's notes)", strict=False)
def test_tiny_recipe_learns_retrieval_and_its_heads_matter(tmp_path):
    run = tmp_path / "tiny"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trained_tiny.py"), "--run", str(run), "--docs", "20"],
                          cwd=ROOT, capture_output=True, text=True, timeout=4 * 3600)
    assert done.returncode == 0, done.stderr[-3000:]
    val = json.loads((run / "validation.json").read_text())
    for n in (128, 256, 512):
        assert val["before"][f"val/exact_match@{n}"] <= 0.02
        assert val["after"][f"val/exact_match@{n}"] >= 0.9
    proofs = json.loads((run / "proofs" / "proofs.json").read_text())
    trained, untrained = proofs["needles"]["trained"], proofs["needles"]["untrained"]
    assert all(trained[n] >= untrained[n] + 0.5 for n in ("128", "256", "512"))
    assert trained["2048"] < trained["512"]  # beyond the lengths it was trained on
    assert proofs["serving"]["same_predictions"] == proofs["serving"]["records"]
    for name in ("question", "answer"):  # masking the detected heads costs more than random ones
        rows = proofs["heads"]["ablation"][name]["rows"]
        assert all(r["top_drop"] >= r["random_drop"] for r in rows)
        assert any(r["top_drop"] >= 2 * r["random_drop"] and r["top_drop"] > 0.2 for r in rows)
