"""Every shipped recipe loads and builds its settings."""

from __future__ import annotations

import pytest
import yaml

from mmlong.ingest import IngestOptions
from mmlong.presets import list_presets, load_preset, recipes_root


def test_every_ingest_preset_builds():
    names = list_presets("ingest")
    assert {"pdf-144dpi", "pdf-budget", "pdf-pages", "pdf-text", "pdf-figures"} <= set(names)
    for name in names:
        opts = IngestOptions.from_preset(name)
        assert opts.tokens.min_pixels <= opts.tokens.max_pixels
        assert load_preset("ingest", name)["description"]


def test_all_shipped_yaml_parses():
    files = [p for group in ("ingest", "render", "train", "eval") for p in (recipes_root() / group).glob("*.yaml")]
    assert files
    for path in files:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def test_144dpi_preset_is_the_mmlongbench_convention():
    opts = IngestOptions.from_preset("pdf-144dpi")
    assert (opts.pdf.mode, opts.pdf.dpi, opts.pdf.image_format) == ("interleaved", 144, "jpeg")


def test_overrides_and_bad_presets(tmp_path):
    opts = IngestOptions.from_preset("pdf-144dpi", {"pdf": {"dpi": 72, "mode": None}})
    assert opts.pdf.dpi == 72 and opts.pdf.mode == "interleaved"
    bad = tmp_path / "bad.yaml"
    bad.write_text("pdf:\n  dpii: 3\n")
    with pytest.raises(ValueError, match="dpii"):
        IngestOptions.from_preset(str(bad))
    bad.write_text("pdf:\n  mode: scan\n")
    with pytest.raises(ValueError, match="mode"):
        IngestOptions.from_preset(str(bad))
    with pytest.raises(ValueError, match="unknown ingest preset"):
        load_preset("ingest", "missing")
