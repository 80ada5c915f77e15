"""The README's two set-up commands stay true, and CI runs exactly the test one."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def _commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    return [b for b in blocks if b.startswith("python3 -m venv .venv")]


def test_two_setup_commands_and_ci_runs_the_test_one():
    main_job, tests = _commands()
    assert "torch==2.13.0" in main_job and "mmlong ingest examples/" in main_job and "--html" in main_job
    assert tests.endswith("python -m pytest") and ".[dev]" in tests
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == tests


def test_examples_hold_all_three_source_kinds():
    examples = ROOT / "examples"
    assert sorted(p.name for p in examples.glob("*.pdf")) == ["annual-report.pdf", "field-guide.pdf"]
    assert len(list((examples / "debian-handbook").glob("*.html"))) == 5
    assert (examples / "city.mp4").is_file() and (examples / "city.srt").is_file()
