"""A 2,000-page PDF ingests in the same memory as a 200-page one."""

from __future__ import annotations

import subprocess
import sys

import pymupdf
import pytest

from tests.conftest import LOREM, ROOT

PEAK_RSS = """
import resource, sys
from mmlong.ingest import ingest
report = ingest([sys.argv[1]], sys.argv[2], preset="pdf-144dpi", workers=1, progress=False)
assert report.ok, report.failed
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _pdf(path, pages: int):
    doc = pymupdf.open()
    for i in range(pages):
        page = doc.new_page(width=595, height=842)
        page.insert_textbox(pymupdf.Rect(50, 50, 545, 300), f"Page {i + 1}. {LOREM}", fontsize=11)
        page.draw_rect(pymupdf.Rect(50, 320, 545, 600), color=(0, 0, 1), fill=(0.8, 0.9, 1))
    doc.save(path)
    return path


def _peak_kb(pdf, out) -> int:
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, str(pdf), str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.slow
def test_2000_pages_in_bounded_memory(tmp_path):
    small = _peak_kb(_pdf(tmp_path / "p200.pdf", 200), tmp_path / "small")
    large = _peak_kb(_pdf(tmp_path / "p2000.pdf", 2000), tmp_path / "large")
    # 2,000 pages of 144 dpi JPEGs are ~100 MB of items; peak memory must not follow them
    assert large < 1.25 * small, (small, large)
