"""A bad file never stops a run: any exception of one input is its failure, errors that cannot
be pickled come back as words, workers die with their parent, one writer per dataset, bugs of
ours exit with a status of their own, corrupt metadata is a dataset error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmlong import store
from mmlong.errors import DatasetError
from mmlong.ingest import ingest
from mmlong.pool import Pool, TaskError
from benchmarks.robustness import nested_forms
from tests.conftest import LOREM, ROOT, write_pdf


def _unpicklable():
    from lxml import etree

    etree.fromstring("<a><b></a>")  # lxml's XMLSyntaxError cannot be pickled back from a worker


def test_a_worker_error_that_cannot_be_pickled_comes_back_as_its_message():
    with Pool(2) as pool:
        pool.submit("bad", _unpicklable)
        (done,) = pool.wait()
    assert isinstance(done.error, TaskError) and "XMLSyntaxError" in str(done.error)


def test_any_exception_of_one_input_is_its_failure(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    write_pdf(tmp_path / "in" / "good.pdf", [LOREM])
    write_pdf(tmp_path / "in" / "odd.pdf", [LOREM, LOREM])
    import mmlong.ingest.run as run

    real = run.check_input

    def check(path, kind, opts):  # an input whose check raises something unexpected
        if path.name == "odd.pdf":
            raise AttributeError("'NoneType' object has no attribute 'width'")
        return real(path, kind, opts)

    monkeypatch.setattr(run, "check_input", check)
    report = ingest([str(tmp_path / "in")], tmp_path / "ds", workers=1, progress=False)
    assert len(report.ingested) == 1 and "AttributeError" in report.failed[str(tmp_path / "in" / "odd.pdf")]


def test_workers_exit_when_the_run_is_killed(tmp_path):
    (tmp_path / "in").mkdir()
    for k in range(3):
        write_pdf(tmp_path / "in" / f"d{k}.pdf", [f"{LOREM} {i}" for i in range(40)])
    code = ("import sys; from mmlong.ingest import ingest\n"
            "if __name__ == '__main__':\n"
            f"    ingest([{str(tmp_path / 'in')!r}], {str(tmp_path / 'ds')!r}, workers=2, chunk_pages=1, progress=False)\n")
    (tmp_path / "run.py").write_text(code)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "run.py")], cwd=ROOT)
    deadline = time.time() + 60
    children: list[int] = []
    while time.time() < deadline and len(children) < 2:
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        children = [int(c) for c in out]
        time.sleep(0.1)
    assert children, "no worker started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(Path(f"/proc/{c}").exists() and "zombie" not in _state(c) for c in children):
        time.sleep(0.2)
    assert not [c for c in children if Path(f"/proc/{c}").exists() and "zombie" not in _state(c)]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def test_a_second_writer_is_refused(tmp_path):
    first = store.DatasetWriter(tmp_path / "ds", {"x": 1})
    code = ("from mmlong.store import DatasetWriter\n"
            f"DatasetWriter({str(tmp_path / 'ds')!r}, {{'x': 1}})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode != 0 and "another mmlong run is writing this dataset" in done.stderr
    first.close()
    store.DatasetWriter(tmp_path / "ds", {"x": 1}).close()  # free again once the first is done


def test_internal_errors_exit_3_and_say_where_to_report(monkeypatch, capsys):
    from mmlong import cli

    def boom(args):
        raise KeyError("a bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["inspect"].set_defaults(func=boom)
    assert cli.main(["inspect", "x"]) == 3
    assert "internal error" in capsys.readouterr().err


@pytest.mark.parametrize("name,content", [
    ("manifest.json", "[]"), ("manifest.json", "{not json"), ("failures.json", "[]"), ("failures.json", '"x"'),
    ("manifest.json", "[" * 100000 + "]" * 100000),
])
def test_corrupt_metadata_is_a_dataset_error(tmp_path, name, content):
    write_pdf(tmp_path / "a.pdf", [LOREM])
    ingest([str(tmp_path / "a.pdf")], tmp_path / "ds", workers=1, progress=False)
    (tmp_path / "ds" / name).write_text(content)
    with pytest.raises(DatasetError, match=name):
        store.summarize(tmp_path / "ds") if name == "failures.json" else store.read_manifest(tmp_path / "ds")
    from mmlong.cli import main

    assert main(["inspect", str(tmp_path / "ds")]) == 2


def test_documents_table_with_wrong_columns_is_a_dataset_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_pdf(tmp_path / "a.pdf", [LOREM])
    ingest([str(tmp_path / "a.pdf")], tmp_path / "ds", workers=1, progress=False)
    (shard,) = (tmp_path / "ds" / "documents").glob("*.parquet")
    pq.write_table(pa.table({"doc_id": ["x"], "num_pages": ["three"]}), shard)
    with pytest.raises(DatasetError, match=shard.name):
        list(store.iter_documents(tmp_path / "ds"))
    with pytest.raises(DatasetError, match=shard.name):
        store.summarize(tmp_path / "ds")


def test_commands_refuse_bad_paths_and_files(tmp_path, capsys):
    from mmlong.cli import main

    assert main(["synth", str(tmp_path / "missing"), "--out", str(tmp_path / "s")]) == 2
    assert "not an mmlong dataset" in capsys.readouterr().err
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1]}), tmp_path / "x.parquet")
    assert main(["mix", str(tmp_path / "x.parquet"), "--out", str(tmp_path / "m")]) == 2
    assert "not a samples file" in capsys.readouterr().err
    write_pdf(tmp_path / "a.pdf", [LOREM])
    ingest([str(tmp_path / "a.pdf")], tmp_path / "ds", workers=1, progress=False)
    assert main(["synth", str(tmp_path / "ds"), "--out", str(tmp_path / "ds")]) == 2  # never into a dataset
    assert "is a dataset" in capsys.readouterr().err
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["options"]


def test_a_page_the_processor_would_refuse_is_skipped_with_a_warning(tmp_path):
    import pymupdf

    doc = pymupdf.open()
    doc.new_page(width=595, height=842).insert_text((50, 80), "A normal page.")
    doc.new_page(width=4, height=1200).insert_text((0, 10), "x")  # a 1:300 strip
    doc.save(tmp_path / "strip.pdf")
    report = ingest([str(tmp_path / "strip.pdf")], tmp_path / "ds", workers=1, progress=False)
    assert report.ok
    (d,) = store.iter_documents(tmp_path / "ds", images=False)
    assert [it.page for it in d.items if it.kind == "page-image"] == [0]
    assert any("page 2 not rendered" in w for w in d.metadata["warnings"])


def _sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def _beating(times: int) -> str:
    from mmlong.pool import beat

    for _ in range(times):
        time.sleep(0.5)
        beat()
    return "beat"


def _grow(mb: int) -> int:
    held = b"x" * (mb * 2**20)  # touched pages: resident memory
    time.sleep(5)
    return len(held)


def test_tasks_past_their_time_or_memory_limit_fail_and_the_pool_goes_on():
    from mmlong.pool import LimitExceeded, Limits

    with Pool(2, limits=Limits(seconds=3, memory_mb=600, what="render")) as pool:  # beats: 4.5 s in all, 0.5 s apart
        for key, fn, arg in [("slow", _sleep, 30), ("beats", _beating, 9), ("big", _grow, 900), ("quick", _sleep, 0)]:
            pool.submit(key, fn, arg)
        done = {}
        while len(pool):
            done.update({d.key: d for d in pool.wait()})
    assert isinstance(done["slow"].error, LimitExceeded) and str(done["slow"].error) == "render exceeded 3 s"
    assert isinstance(done["big"].error, LimitExceeded) and "render exceeded 600 MB of memory" in str(done["big"].error)
    assert done["beats"].result == "beat" and done["quick"].result == "slept"  # progress resets the clock


def test_a_pdf_that_renders_forever_fails_alone(tmp_path):
    """Nested forms (a few KB) would hang the run: the page times out, the document fails with
    the reason, the good PDF beside it is ingested."""
    from mmlong.pool import Limits

    (tmp_path / "in").mkdir()
    nested_forms(tmp_path / "in" / "bomb.pdf", depth=12)
    write_pdf(tmp_path / "in" / "good.pdf", [LOREM])
    started = time.monotonic()
    report = ingest([str(tmp_path / "in")], tmp_path / "ds", workers=2, progress=False, limits=Limits(4, 2048, "render"))
    assert time.monotonic() - started < 60
    assert report.failed == {str((tmp_path / "in" / "bomb.pdf").resolve()): "render exceeded 4 s on pages 1-1"}
    assert report.ingested == [str((tmp_path / "in" / "good.pdf").resolve())]


def test_a_figure_over_the_decompression_bomb_limit_is_skipped_with_a_warning(tmp_path, monkeypatch):
    """The figure goes (with the reason), its page and the document stay."""
    import mmlong.ingest.pdf as pdf

    monkeypatch.setattr(pdf, "_bomb_pixels", lambda: 50_000)  # the test's figures are 300x200 = 60,000 pixels
    write_pdf(tmp_path / "a.pdf", [LOREM, LOREM], images={1: [(50, 300, 350, 500)]})
    report = ingest([str(tmp_path / "a.pdf")], tmp_path / "ds", workers=1, progress=False, preset="pdf-figures")
    assert not report.failed
    (d,) = store.iter_documents(tmp_path / "ds", images=False)
    assert sorted({it.page for it in d.items if it.kind == "text"}) == [0, 1]
    assert not [it for it in d.items if it.kind == "figure"]
    assert any("page 2: a figure of 300x200 pixels skipped" in w for w in d.metadata["warnings"])


def test_markup_nested_thousands_deep_is_read(tmp_path):
    """The DOM walk keeps its own stack: 5,000 nested divs are a page, not a RecursionError."""
    page = tmp_path / "deep.html"
    page.write_text("<html><body><main><h1>Deep</h1>" + "<div>" * 5000 + "the deep text" + "</div>" * 5000 + "</main></body></html>")
    report = ingest([str(page)], tmp_path / "ds", workers=1, progress=False)
    assert not report.failed
    (d,) = store.iter_documents(tmp_path / "ds", images=False)
    assert [it.text for it in d.items if it.kind == "text"][-1] == "the deep text"
