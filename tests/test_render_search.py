"""The evolutionary render-config search and the `mmlong render` / `render-search` commands."""

from __future__ import annotations

import json

import pytest
import yaml

from mmlong import store
from mmlong.cli import main
from mmlong.presets import load_preset
from mmlong.render.glyph import RenderConfig, compression, render_text
from mmlong.render.search import SearchSettings, load_space, search, to_config, write_results
from mmlong.schema import RENDERED_TEXT

TEXT = ("Every page shown to the model as an image costs tokens in proportion to its pixels, so the "
        "smaller the print the more text a page carries. ") * 25


def pixel_scorer(text, pages):
    """A cheap stand-in judge: legibility falls as compression rises (bigger print reads better)."""
    return min(1.0, 1.6 / max(compression(text, pages).ratio, 1e-9))


SPACE = {"dpi": [48, 120, 12], "font_size": [7, 12, 1], "line_extra": [0, 2, 1], "hscale": [0.8, 1.0, 0.1], "font": ["sans", "serif"]}


def test_search_space_values():
    space = load_space(load_preset("render", "search-space"))
    assert space["dpi"] == [60, 72, 84, 96, 108, 120] and space["font"] == ["sans", "serif", "mono"]
    assert space["hscale"][0] == 0.75 and space["hscale"][-1] == 1.0 and len(space["palette"]) == 3
    with pytest.raises(ValueError, match="unknown genes"):
        load_space({"colour": ["red"]})


def test_genes_become_configs():
    cfg = to_config({"font_size": 8, "line_extra": 1.5, "palette": ["#ffffff", "#000000"], "dpi": 96}, RenderConfig())
    assert (cfg.font_size, cfg.line_height, cfg.color, cfg.background, cfg.dpi) == (8, 9.5, "#ffffff", "#000000", 96)


def test_search_is_reproducible_and_respects_the_floor():
    settings = SearchSettings(floor=0.8, population=6, budget=18, seed=3)
    a = search(TEXT, pixel_scorer, SPACE, settings)
    b = search(TEXT, pixel_scorer, SPACE, settings)
    assert [(e.genes, e.ratio) for e in a.evaluations] == [(e.genes, e.ratio) for e in b.evaluations]
    assert len(a.evaluations) == 18
    best = a.best(1)[0]
    assert best.feasible and best.legibility >= 0.8
    assert best.ratio == max(e.ratio for e in a.evaluations if e.feasible)
    first_gen = max(e.ratio for e in a.evaluations if e.feasible and e.generation == 0)
    assert best.ratio >= first_gen  # elitism: never worse than the initial population
    other = search(TEXT, pixel_scorer, SPACE, SearchSettings(floor=0.8, population=6, budget=18, seed=4))
    assert [e.genes for e in other.evaluations] != [e.genes for e in a.evaluations]


def test_impossible_combinations_are_skipped_from_the_first_generation():
    """Margins of 250 pt fit an A4 page but not an A5 one: half the space is no config."""
    space = {"page_size": ["A4", "A5"], "margins": [200, 250, 50], "font_size": [7, 12, 1]}
    result = search(TEXT, pixel_scorer, space, SearchSettings(floor=0.1, population=6, budget=12, seed=5))
    assert len(result.evaluations) == 12
    assert all(e.genes["page_size"] == "A4" or e.genes["margins"] == 200 for e in result.evaluations)
    with pytest.raises(ValueError, match="no gene combination"):
        search(TEXT, pixel_scorer, {"page_size": ["A5"], "margins": [250, 300, 50]}, SearchSettings(population=3, budget=3))


def test_results_are_presets_and_a_plot(tmp_path):
    settings = SearchSettings(floor=0.8, population=4, budget=8, seed=0, top=2)
    result = search(TEXT, pixel_scorer, SPACE, settings)
    presets = write_results(result, tmp_path, settings, RenderConfig())
    assert [p.name for p in presets] == ["best-1.yaml", "best-2.yaml"]
    best = result.best(1)[0]
    cfg = RenderConfig.from_dict(yaml.safe_load(presets[0].read_text()))
    assert compression(TEXT, render_text(TEXT, cfg)).ratio == pytest.approx(best.ratio)
    rows = [json.loads(line) for line in (tmp_path / "search.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {"genes", "ratio", "legibility", "feasible", "generation"} <= set(rows[0])
    assert (tmp_path / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_command_on_files_and_datasets(tmp_path, pdf_dir, capsys):
    notes = tmp_path / "notes.md"
    notes.write_text(TEXT)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    assert main(["ingest", str(pdf_dir), "--out", str(tmp_path / "ingested"), "--workers", "1", "--no-progress"]) == 0
    code = main(["render", str(notes), str(bad), str(tmp_path / "ingested"), "--out", str(tmp_path / "r"), "--workers", "1",
                 "--no-progress"])
    out = capsys.readouterr()
    assert code == 1 and "not UTF-8 text" in out.err and "overall" in out.out
    docs = {d.source.rsplit("/", 1)[-1]: d for d in store.iter_documents(tmp_path / "r")}
    assert len(docs) == 3
    d = docs["notes.md"]
    assert all(it.kind == RENDERED_TEXT and it.image[:4] == b"\x89PNG" for it in d.items)
    assert d.vision_tokens == sum(it.tokens for it in d.items) and d.text_tokens == 0
    assert d.metadata["compression_ratio"] == pytest.approx(d.metadata["source_text_tokens"] / d.vision_tokens, abs=1e-4)
    pages = render_text(TEXT, RenderConfig.from_dict(load_preset("render", "glyph-default")))
    assert [it.image for it in d.items] == [p.image for p in pages]
    # resuming renders nothing twice
    assert main(["render", str(notes), "--out", str(tmp_path / "r"), "--workers", "1", "--no-progress"]) == 0
    assert len(list(store.iter_documents(tmp_path / "r", images=False))) == 3


def test_render_search_command(tmp_path, monkeypatch, capsys):
    import mmlong.render.search as search_module

    monkeypatch.setattr(search_module, "ocr_scorer", lambda engine: pixel_scorer)
    src = tmp_path / "t.txt"
    src.write_text(TEXT)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    code = main(["render-search", str(src), "--out", str(tmp_path / "s"), "--space", str(space), "--budget", "8",
                 "--population", "4", "--floor", "0.8"])
    assert code == 0 and "best:" in capsys.readouterr().out
    assert (tmp_path / "s" / "best-1.yaml").exists() and (tmp_path / "s" / "search.png").exists()


def test_parallel_render_equals_serial(tmp_path):
    from mmlong.render.run import render

    for k in range(3):
        (tmp_path / f"t{k}.txt").write_text(f"Document {k}. " + TEXT)
    serial = render([str(tmp_path)], tmp_path / "one", workers=1, progress=False)
    parallel = render([str(tmp_path)], tmp_path / "two", workers=2, progress=False)
    assert serial.ok and parallel.ok and serial.ratio == parallel.ratio > 1
    a = {d.doc_id: [it.image for it in d.items] for d in store.iter_documents(tmp_path / "one")}
    b = {d.doc_id: [it.image for it in d.items] for d in store.iter_documents(tmp_path / "two")}
    assert a == b and len(a) == 3
