"""Every shipped recipe loads and builds the settings object it configures."""

from __future__ import annotations

import pytest

from mmlong.ingest import IngestOptions
from mmlong.mixtures.mix import MixtureSpec
from mmlong.presets import GROUPS, list_presets, load_preset, preset_path, recipes_root
from mmlong.render.glyph import RenderConfig
from mmlong.render.search import load_space, to_config
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def tiny_parts(tiny_vlm, page_samples, tmp_path_factory):
    """A tiny model folder and a tiny mixture folder, to stand in for a recipe's own paths."""
    from mmlong.mixtures.packing import pack
    from mmlong.samples import write_samples
    from mmlong.train.export import export_hf
    from mmlong.train.processor import build_processor

    d = tmp_path_factory.mktemp("parts")
    export_hf(tiny_vlm, build_processor(page_samples[0].budget), d / "model")
    write_samples(page_samples, d / "mix" / "mix.parquet")
    pack([(s.sample_id, s.total_tokens) for s in page_samples], 1024, page_samples[0].budget).write(d / "mix" / "packs.parquet")
    return d


def build_recipe(group: str, name: str, parts=None):
    """The settings object a shipped recipe builds (what its command would run with); a
    training recipe's model and data paths point at `parts`."""
    data = load_preset(group, name)
    if group == "ingest":
        return IngestOptions.from_preset(name)
    if group == "render" and name == "search-space":
        space = load_space(data)
        return [to_config({k: v[0] for k, v in space.items()}, RenderConfig()),
                to_config({k: v[-1] for k, v in space.items()}, RenderConfig())]
    if group == "render":
        return RenderConfig.from_dict(data)
    if group == "train" and "trainer" not in data:
        return MixtureSpec.from_dict(data)
    if group == "train":
        from mmlong.train.run import make_cli

        overrides = ["--trainer.accelerator=cpu"]
        if data["model"]["model"].get("path"):
            overrides += [f"--model.model.path={parts / 'model'}", "--model.model.attn_implementation=sdpa"]
        if "mixture" in data["data"]["init_args"]:
            overrides.append(f"--data.init_args.mixture={parts / 'mix'}")
        cli = make_cli(preset_path(group, name), parts / "runs" / name, overrides)
        return cli.trainer, cli.model, cli.datamodule
    if group == "eval":
        from mmlong.eval.tasks import parse_task

        return parse_task(data)
    raise AssertionError(f"no builder for {group}/{name}")


@pytest.mark.parametrize("group,name", [(g, n) for g in GROUPS for n in list_presets(g)])
def test_every_shipped_recipe_builds(group, name, tiny_parts):
    assert load_preset(group, name)["description"]
    assert build_recipe(group, name, tiny_parts) is not None


def test_recipes_ship_inside_the_package_and_show_at_the_top():
    assert recipes_root().parent.name == "mmlong" and (recipes_root() / "ingest" / "pdf-144dpi.yaml").is_file()
    for group in GROUPS:
        assert sorted(p.name for p in (ROOT / group).glob("*.yaml")) == sorted(f"{n}.yaml" for n in list_presets(group))
    assert {"pdf-144dpi", "pdf-budget", "pdf-pages", "pdf-text", "pdf-figures"} <= set(list_presets("ingest"))


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
    bad.write_text("pdf: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        IngestOptions.from_preset(str(bad))
    with pytest.raises(ValueError, match="unknown ingest preset"):
        load_preset("ingest", "missing")
