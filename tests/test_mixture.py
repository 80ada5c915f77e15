"""Mixtures and packing: proportions, exact-length bins, trimming that keeps evidence, efficiency."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pymupdf
import pytest

from mmlong.cli import main
from mmlong.ingest import IngestOptions, ingest
from mmlong.ingest.pdf import PdfOptions
from mmlong.mixtures.mix import MixtureSpec, mix, run_mix
from mmlong.messages import View
from mmlong.mixtures.packing import pack
from mmlong.samples import read_samples
from mmlong.synthesis.run import synth
from mmlong.synthesis.template import TemplateWriter
from tests.conftest import sentence

PAGES = [6, 14, 28, 56, 120]
BINS = [2048, 4096, 8192, 16384, 24576]  # the 120-page document (~26K tokens) must be trimmed


def write_doc(path, pages: int) -> None:
    doc = pymupdf.open()
    for p in range(1, pages + 1):
        page = doc.new_page(width=595, height=842)
        page.insert_textbox(pymupdf.Rect(50, 60, 545, 300), " ".join(sentence(p, k) for k in range(2)), fontsize=10)
        if p % 5 == 2:
            page.insert_textbox(pymupdf.Rect(50, 320, 545, 350), f"Figure {p // 5 + 1}: Chart of archive {p}.", fontsize=9)
    doc.set_toc([[1, f"Part {k}", k * 4 + 1] for k in range(pages // 4)])
    doc.save(path)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    d = tmp_path_factory.mktemp("mix")
    for n in PAGES:
        write_doc(d / f"doc{n:03d}.pdf", n)
    opts = IngestOptions(pdf=PdfOptions(dpi=36))  # ~150 vision tokens a page keeps the pool small and quick
    ingest([str(d / f"doc{n:03d}.pdf") for n in PAGES], d / "ds", options=opts, workers=1, progress=False)
    synth(d / "ds", d / "synth", TemplateWriter(per_kind=4, unanswerable_rate=0.1), segments=4, seed=0, min_pages=4, max_pages=6,
          view=View("all"))  # text layer shown too: the lengths this pool is designed around
    return d


def spec(**changes) -> MixtureSpec:
    return MixtureSpec(**{"max_length": 24576, "samples": 60, "bins": BINS, "seed": 1, "per_document": 0, **changes})


def test_pool_covers_every_bin(pool):
    samples = read_samples(pool / "synth" / "samples.parquet")
    s = spec()
    per_doc = {}
    for x in samples:
        per_doc.setdefault(x.source, set()).add(s.bin_of(x.total_tokens))
    assert sorted(b for bins in per_doc.values() for b in bins if b is not None) == [0, 1, 2, 3]
    assert all(x.total_tokens > 24576 for x in samples if "doc120" in x.source)


def test_mixture_proportions_bins_and_trimming(pool):
    samples = read_samples(pool / "synth" / "samples.parquet")
    chosen, report = mix(samples, spec())
    too_long = [s for s in samples if s.total_tokens > 24576]
    # every over-long sample is trimmed, or dropped when its evidence lies in pages that cannot fit
    assert report.drawn == 60 and not report.shortfall and report.trimmed > 0
    assert report.trimmed + report.dropped_too_long == len(too_long)
    for task, share in report.tasks_spec.items():
        assert abs(report.tasks_realised[task] - share) <= 0.02
    counts = [b["samples"] for b in report.bins]
    assert sum(counts) == 60 and max(counts) - min(counts) <= 3  # balanced; a short cell borrows from a neighbour
    assert all(s.total_tokens <= 24576 for s in chosen)
    trimmed = [s for s in chosen if "doc120" in s.source]
    assert trimmed
    for s in trimmed:
        images = sum(1 for c in s.messages[0]["content"] if c["type"] == "image")
        assert max(s.evidence_pages + [s.segment[1]]) <= images < 120
    again, _ = mix(samples, spec())
    assert [s.sample_id for s in again] == [s.sample_id for s in chosen]


def test_target_focused_and_shortfall(pool):
    samples = read_samples(pool / "synth" / "samples.parquet")
    focused = spec(mode="target-focused", samples=31)
    assert focused.weights() == pytest.approx([1 / 31, 2 / 31, 4 / 31, 8 / 31, 16 / 31])
    _, report = mix(samples, focused)
    assert [b["samples"] for b in report.bins][2:] == [4, 8, 16] and sum(b["samples"] for b in report.bins) == 31
    _, short = mix(samples, spec(samples=5000))
    usable = len([s for s in samples if s.task in short.tasks_spec]) - short.dropped_too_long
    assert short.shortfall and short.drawn == usable < 5000
    with pytest.raises(ValueError, match="mode"):
        MixtureSpec(mode="long")
    with pytest.raises(ValueError, match="bins"):
        MixtureSpec(bins=[8192, 4096])


def test_documents_are_capped_and_deviations_reported(pool):
    """No document takes more than twice an even share; what the pool cannot give is said."""
    from collections import Counter

    samples = read_samples(pool / "synth" / "samples.parquet")
    focused = dict(mode="target-focused", samples=31)  # half of it from the longest bin: one document
    free, report = mix(samples, spec(**focused))
    assert report.per_document_cap is None and max(Counter(s.doc_id for s in free).values()) > 7
    chosen, capped = mix(samples, spec(**focused, per_document=1.0))  # an even share: 31 / 5 documents
    assert max(Counter(s.doc_id for s in chosen).values()) <= 7 == capped.per_document_cap and capped.capped > 0
    assert any(w.startswith("length bin") for w in capped.warnings)
    _, skewed = mix(samples, spec(samples=60, tasks={"extract-single": 10, "reasoning": 90}))
    assert any(w.startswith("task reasoning") for w in skewed.warnings)


def test_bins_past_the_window_are_clipped(pool, tmp_path):
    """A 128K recipe mixed for a 32K window: its bins end at the window."""
    from mmlong.presets import load_preset

    recipe = MixtureSpec.from_dict({**load_preset("train", "mmprolong-128k"), "max_length": 32768})
    assert recipe.bins == [8192, 16384, 32768]
    weighted = MixtureSpec(max_length=20000, bins=[8192, 16384, 32768, 65536], bin_weights=[1, 2, 3, 4])
    assert weighted.bins == [8192, 16384, 20000] and weighted.bin_weights == [1, 2, 3]
    assert main(["mix", str(pool / "synth"), "--recipe", "mmprolong-128k", "--max-length", "24576", "--samples", "20",
                 "--out", str(tmp_path / "m")]) == 0


def test_packing_efficiency_on_a_realistic_length_distribution():
    rng = random.Random(0)
    edges = [0, 8192, 16384, 32768, 65536, 131072]
    lengths = [rng.randint(edges[b] + 1, edges[b + 1]) for b in [i % 5 for i in range(2000)]]
    packed = pack([(f"s{i}", n) for i, n in enumerate(lengths)], 131072)
    assert packed.efficiency >= 0.98
    assert all(sum(n for _, n in w) <= 131072 for w in packed.windows)
    assert sorted(s for w in packed.windows for s, _ in w) == sorted(f"s{i}" for i in range(2000))
    with pytest.raises(ValueError, match="more than the window"):
        pack([("big", 200000)], 131072)


def test_run_mix_writes_everything(pool, tmp_path):
    samples = read_samples(pool / "synth" / "samples.parquet")
    report = run_mix(samples, spec(), tmp_path)
    assert report.packing["samples"] == 60 and report.packing["windows"] >= 1
    packs = pq.read_table(tmp_path / "packs.parquet").to_pylist()
    mixed = {s.sample_id: s.total_tokens for s in read_samples(tmp_path / "mix.parquet")}
    for w in packs:
        assert w["lengths"] == [mixed[s] for s in w["sample_ids"]] and w["used"] <= 24576
        assert w["offsets"] == [sum(w["lengths"][:k]) for k in range(len(w["lengths"]))]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["drawn"] == 60 and saved["packing"]["efficiency"] == report.packing["efficiency"]
    assert (tmp_path / "lengths.png").read_bytes()[:4] == b"\x89PNG"


def test_synth_and_mix_commands(pool, tmp_path, capsys):
    assert main(["synth", str(pool / "ds"), "--out", str(tmp_path / "s"), "--segments", "2", "--min-pages", "4",
                 "--max-pages", "6"]) == 0
    assert '"samples"' in capsys.readouterr().out
    recipe = tmp_path / "r.yaml"
    recipe.write_text("max_length: 24576\nsamples: 20\nbins: [2048, 4096, 8192, 16384, 24576]\n")
    assert main(["mix", str(tmp_path / "s"), "--recipe", str(recipe), "--out", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    assert '"drawn": 20' in printed and (tmp_path / "m" / "packs.parquet").exists()


def test_shipped_recipes_build():
    from mmlong.presets import list_presets, load_preset

    names = [n for n in list_presets("train") if "trainer" not in load_preset("train", n)]  # the rest are Lightning runs
    assert {"mmprolong-128k", "mmprolong-long-biased", "ocr-baselines"} <= set(names)
    for name in names:
        s = MixtureSpec.from_dict(load_preset("train", name))
        assert s.max_length == 131072 and abs(sum(s.weights()) - 1) < 1e-9
    main_mix = MixtureSpec.from_dict(load_preset("train", "mmprolong-128k"))
    assert main_mix.tasks == {"extract-single": 40, "extract-multi": 40, "reasoning": 20} and main_mix.mode == "balanced"
