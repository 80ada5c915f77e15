"""The `mmlong` command-line contract that scripts rely on."""

from __future__ import annotations

import json
import subprocess
import sys

from mmlong.cli import main
from tests.conftest import ROOT


def test_ingest_then_inspect_json(pdf_dir, bad_dir, tmp_path, capsys):
    out = tmp_path / "ds"
    empty, _ = bad_dir["empty.pdf"]
    code = main(["ingest", str(pdf_dir), str(empty), "--out", str(out), "--workers", "1", "--no-progress"])
    assert code == 1  # something failed, the rest was ingested
    printed = capsys.readouterr()
    assert "ingested 2 document(s): 4 pages" in printed.out and f"dataset: {out.resolve()}" in printed.out
    assert f"skipped {empty.resolve()}: empty file (0 bytes)" in printed.err
    assert main(["inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["documents"] == 2 and summary["pages"] == 4
    assert summary["items_by_kind"] == {"page-image": 4, "text": 4}
    assert summary["tokens"]["vision"] == 4 * 2520 and summary["tokens"]["text"] > 0
    assert summary["tokens"]["total"] == summary["tokens"]["text"] + summary["tokens"]["vision"]
    assert summary["failed"] == [{"path": str(empty.resolve()), "reason": "empty file (0 bytes)"}]
    assert sum(b["documents"] for b in summary["length_histogram"]) == 2
    # re-running the same command resumes: nothing new, the failure stays reported
    assert main(["ingest", str(pdf_dir), str(empty), "--out", str(out), "--workers", "1", "--no-progress"]) == 1
    assert "skipped 2 already present" in capsys.readouterr().out


def test_inspect_table_and_html_preview(pdf_dir, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["ingest", str(pdf_dir), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    capsys.readouterr()
    html_path = tmp_path / "preview.html"
    assert main(["inspect", str(out), "--html", str(html_path), "--max-pages", "2"]) == 0
    printed = capsys.readouterr().out
    assert "documents" in printed and "tokens: vision" in printed and f"preview: {html_path.resolve()}" in printed
    html = html_path.read_text()
    assert html.count('<img src="data:image/jpeg;base64,') == 3  # report: pages 1-2, note: page 1
    assert "page-image | seq 0 | page 1 | bbox 0,0,595,842 | 1190x1684 jpeg | 2520 tokens" in html
    assert "The committee reviewed the annual figures" in html and "Introduction" in html
    assert "page-image | seq 2 | page 2 (label A-1) |" in html  # printed page labels shown


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["ingest", "x.pdf", "--out", str(tmp_path / "ds"), "--preset", "nope"]) == 2
    assert "unknown ingest preset 'nope'" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path)]) == 2
    assert "not an mmlong dataset" in capsys.readouterr().err


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "mmlong.cli", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "ingest" in result.stdout and "inspect" in result.stdout


def test_inspect_names_frames_and_webpages(tmp_path, capsys):
    """Videos report frames and webpages figures (not "0 pages"); the HTML preview honours
    --max-pages for them; `inspect --json | head` ends without a broken-pipe error."""
    from tests.conftest import make_video, png_bytes

    src = tmp_path / "src"
    src.mkdir()
    make_video(src / "clip.mp4", 8)
    (src / "pic.png").write_bytes(png_bytes(80, 60, (200, 40, 40)))
    (src / "page.html").write_text('<html><body><main><h1>Title</h1><p>A paragraph of text.</p><img src="pic.png" alt="pic">'
                                   "</main></body></html>")
    out = tmp_path / "ds"
    assert main(["ingest", str(src), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "frames" in printed and "webpage" in printed and "0 pages" not in printed
    assert main(["inspect", str(out), "--json", "--html", str(tmp_path / "p.html"), "--max-pages", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sources"]["video"]["frames"] > 2 and summary["sources"]["html"]["figures"] == 1
    assert (tmp_path / "p.html").read_text().count("<img src=") == 2 + 1  # two frames, the webpage's figure
    piped = subprocess.run(f"{sys.executable} -m mmlong.cli inspect {out} --json | head -1", shell=True, cwd=ROOT,
                           capture_output=True, text=True)
    assert piped.stdout.strip() == "{" and piped.stderr == ""
