"""Lightning training of a tiny Qwen2.5-VL: chunked token-weighted loss, RoPE settings, exact
resume after kill -9, Hugging Face folders plain transformers loads, clear errors on bad
recipes, and the packing check command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mmlong.train.loss import chunked_cross_entropy
from mmlong.train.model import ModelSettings, build_model, decoder, tiny_config
from tests.conftest import ROOT

HANDBOOK = ROOT / "examples" / "debian-handbook"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One needle cache for the module's runs (same settings: generated once)."""
    return tmp_path_factory.mktemp("needles")


def needle_recipe(tmp_path: Path, cache: Path, steps: int = 6, **data) -> Path:
    """A small needle-retrieval recipe over the shipped handbook pages."""
    recipe = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": steps, "log_every_n_steps": 1,
                    "enable_progress_bar": False},
        "model": {"model": {"config": tiny_config()},
                  "optim": {"lr": 3e-3, "min_lr": 3e-4, "warmup": 2, "weight_decay": 0.0, "betas": [0.9, 0.98]}},
        "data": {"class_path": "mmlong.train.needle_data.NeedleData",
                 "init_args": {"haystack": [str(HANDBOOK / "sect.apt-get.html")],
                               "heldout": [str(HANDBOOK / "sect.network-config.html")],
                               "stages": [{"steps": 4, "lengths": [128], "row_length": 384},
                                          {"steps": 4, "lengths": [128, 256], "row_length": 384}],
                               "tokens_per_batch": 384, "val_lengths": [128, 256], "val_per_length": 2,
                               "cache": str(cache), "workers": 1, **data}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def losses(run: Path) -> dict[int, float]:
    """Per-step training loss over every logger version of a run (a resumed run writes a new
    one; the last value logged for a step wins)."""
    import csv

    out: dict[int, float] = {}
    for path in sorted((run / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])):
        for row in csv.DictReader(path.open()):
            if row.get("train/loss"):
                out[int(row["step"])] = float(row["train/loss"])
    return out


def test_chunked_loss_equals_full_cross_entropy():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(2, 30, 16, requires_grad=True)
    labels = torch.full((2, 30), -100)
    labels[0, 5:9], labels[1, 20:30] = torch.randint(0, 50, (4,)), torch.randint(0, 50, (10,))
    total, n, _ = chunked_cross_entropy(hidden, labels, head, chunk=3)
    logits = head(hidden)[:, :-1].reshape(-1, 50)
    full = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
    assert n == 14 and torch.allclose(total, full)
    g1 = torch.autograd.grad(total, hidden)[0]
    g2 = torch.autograd.grad(full, hidden)[0]
    assert torch.allclose(g1, g2, atol=1e-6)


def test_rope_stays_fp32_under_bf16_and_takes_a_new_base():
    fp32 = build_model(ModelSettings(config=tiny_config(), rope_theta=4e6))
    bf16 = build_model(ModelSettings(config=tiny_config(), rope_theta=4e6, dtype="bfloat16"))
    a, b = decoder(fp32).rotary_emb.inv_freq, decoder(bf16).rotary_emb.inv_freq
    assert b.dtype == torch.float32 and torch.equal(a, b)
    dim = tiny_config()["text_config"]["hidden_size"] // tiny_config()["text_config"]["num_attention_heads"]
    assert torch.allclose(a, 1 / 4e6 ** (torch.arange(0, dim, 2).float() / dim))
    assert next(bf16.parameters()).dtype == torch.bfloat16
    pos = torch.tensor(131071.0)
    assert (pos * b - pos * a).abs().max() == 0  # the angles at position 131071, as in fp32
    assert (pos * a.bfloat16().float() - pos * a).abs().max() > 1.0  # what a plain cast to bf16 would give


def test_yarn_and_linear_scaling_keep_mrope_sections():
    yarn = build_model(ModelSettings(config=tiny_config(), rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                                                          "original_max_position_embeddings": 8192}))
    base = build_model(ModelSettings(config=tiny_config()))
    rotary = decoder(yarn).rotary_emb
    assert rotary.rope_type == "yarn" and rotary.attention_scaling > 1
    assert yarn.config.text_config.rope_parameters["mrope_section"] == [2, 3, 3]
    assert not torch.equal(rotary.inv_freq, decoder(base).rotary_emb.inv_freq)
    linear = build_model(ModelSettings(config=tiny_config(), rope_scaling={"rope_type": "linear", "factor": 2.0}))
    assert torch.allclose(decoder(linear).rotary_emb.inv_freq, decoder(base).rotary_emb.inv_freq / 2)


def test_training_run_writes_checkpoints_logs_and_a_hf_folder(tmp_path, cache):
    from mmlong.train.run import train

    folder = train(needle_recipe(tmp_path, cache), tmp_path / "run", checkpoint_every=3, threads=2)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    steps = losses(tmp_path / "run")
    assert sorted(steps) == list(range(6)) and all(v > 0 for v in steps.values())
    report = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert {"val/exact_match@128", "val/exact_match@256"} <= set(report["before"]) and report["steps"] == 6
    assert {"model.safetensors", "config.json", "tokenizer.json", "preprocessor_config.json",
            "chat_template.jinja"} <= {p.name for p in folder.iterdir()}
    # plain transformers, without mmlong: model, tokenizer and image processor load, and generate
    script = (
        "import sys; sys.modules['mmlong'] = None\n"
        "import torch\n"
        "from transformers import AutoModelForImageTextToText, AutoTokenizer, AutoImageProcessor\n"
        f"m = AutoModelForImageTextToText.from_pretrained({str(folder)!r}); t = AutoTokenizer.from_pretrained({str(folder)!r})\n"
        f"AutoImageProcessor.from_pretrained({str(folder)!r})\n"
        "ids = t.apply_chat_template([{'role': 'user', 'content': 'Hi'}], add_generation_prompt=True, return_tensors='pt')\n"
        "ids = ids['input_ids'] if hasattr(ids, 'keys') else ids\n"
        "out = m.generate(input_ids=ids, mm_token_type_ids=torch.zeros_like(ids), max_new_tokens=3, do_sample=False)\n"
        "print(type(m).__name__, out.shape[1] - ids.shape[1])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["Qwen2_5_VLForConditionalGeneration", "3"]
    # the packing check on the trained model and its own packed windows
    check = [sys.executable, "-m", "mmlong.cli", "train", "check", "--model", str(folder), "--data", str(cache / "train" / "stage-1")]
    done = subprocess.run(check, capture_output=True, text=True)
    result = json.loads(done.stdout)
    assert done.returncode == 0 and result["ok"] and result["samples"] > result["windows"] >= 1, done.stderr
    assert result["max_logit_diff"] < 1e-4 and result["loss_diff"] < 1e-5


def test_the_packing_check_catches_1d_positions(monkeypatch, tmp_path, cache):
    """What trainers shipped: one position sequence over the packed row (no restart per
    sample, no M-RoPE rows). The check must fail on it."""
    import mmlong.train.check as check
    from mmlong.train.data import windows_from_mixture
    from mmlong.train.needle_data import NeedleData, Stage
    from mmlong.train.processor import build_processor

    data = yaml.safe_load(needle_recipe(tmp_path, cache).read_text())["data"]["init_args"]
    NeedleData(**{**data, "stages": [Stage(**s) for s in data["stages"]]}).prepare_data()  # cached: made once
    windows = [w for w in windows_from_mixture(cache / "train" / "stage-1")[0] if len(w) > 1][:2]
    model = build_model(ModelSettings(config=tiny_config())).eval()
    good = check.check_packing(model, build_processor(), windows)
    assert good.ok(1e-4)
    real = check.pack_row

    def one_d(encoded, *args):
        row = real(encoded, *args)
        row["position_ids"] = torch.arange(row["input_ids"].shape[0]).expand(4, -1).clone()
        return row

    monkeypatch.setattr(check, "pack_row", one_d)
    bad = check.check_packing(model, build_processor(), windows)
    assert not bad.ok(1e-4) and bad.max_logit_diff > 1e-3


def test_kill_9_then_resume_gives_the_same_loss_curve(tmp_path, cache):
    recipe = needle_recipe(tmp_path, cache, steps=8)
    cmd = [sys.executable, "-m", "mmlong.cli", "train", "--config", str(recipe), "--checkpoint-every", "1", "--threads", "2"]
    full = subprocess.run(cmd + ["--out", str(tmp_path / "full")], capture_output=True, text=True, cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "cut")], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "cut" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts / "step-step=4.ckpt").is_file():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (ckpts / "last.ckpt").is_file() and not (tmp_path / "cut" / "hf").exists()
    resumed = subprocess.run(cmd + ["--out", str(tmp_path / "cut")], capture_output=True, text=True, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert sorted(a) == sorted(b) == list(range(8))
    assert a == b  # step for step, bit for bit
    wa = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    wb = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bad_recipes_fail_before_any_work(tmp_path, capsys):
    from mmlong.cli import main

    good = yaml.safe_load(needle_recipe(tmp_path, tmp_path / "needles").read_text())
    cases = {
        "unknown key": ({**good, "model": {**good["model"], "optimz": {"lr": 1.0}}}, "optimz"),
        "huge model": ({**good, "model": {"model": {"config": {"text_config": {"hidden_size": 65536}}}}}, "parameters"),
        "missing checkpoint": ({**good, "model": {"model": {"path": str(tmp_path / "nowhere")}}}, "no config.json"),
        "short window": ({**good, "data": {**good["data"], "init_args": {**good["data"]["init_args"], "stages": [
            {"steps": 2, "lengths": [256], "row_length": 200}]}}}, "exceeds the row length"),
    }
    for name, (recipe, words) in cases.items():
        path = tmp_path / f"{name.replace(' ', '-')}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        assert main(["train", "--config", str(path), "--out", str(tmp_path / name)]) == 2, name
        assert words in capsys.readouterr().err, name
    assert not (tmp_path / "needles").exists()  # nothing was generated


def test_a_tokenizer_without_the_vision_tokens_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mmlong.train.processor import build_processor

    raw = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>").save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match="lacks the Qwen2.5-VL special tokens"):
        build_processor(tokenizer=tmp_path / "tok")


def test_frozen_vision_and_checkpointing_leave_the_loss_unchanged(page_samples):
    from mmlong.train.collate import Collator
    from mmlong.train.module import VLMModule
    from mmlong.train.processor import build_processor

    batch = Collator(build_processor(page_samples[0].budget))([page_samples[:2], page_samples[2:]])
    frozen = VLMModule(ModelSettings(config=tiny_config(), freeze_vision=True))
    trained = VLMModule(ModelSettings(config=tiny_config(), freeze_vision=False, gradient_checkpointing=True))
    la, na, _ = frozen.loss(batch)
    lb, nb, _ = trained.loss(batch)
    assert na == nb == batch["label_tokens"] and torch.allclose(la, lb, atol=1e-5)
    la.backward()
    lb.backward()
    assert all(p.grad is None for p in frozen.model.model.visual.parameters())
    assert any(p.grad is not None for p in trained.model.model.visual.parameters())
    text = dict(frozen.model.model.language_model.named_parameters())
    for name, p in trained.model.model.language_model.named_parameters():
        assert torch.allclose(p.grad, text[name].grad, atol=1e-5), name


def test_image_needles_train_through_the_same_path(tmp_path):
    """needle.modality image: the value is only on a card image; the batches carry its pixels."""
    from mmlong.train.needle_data import NeedleData, NeedleSettings, Stage

    data = NeedleData([str(HANDBOOK / "sect.apt-get.html")], [str(HANDBOOK / "sect.network-config.html")],
                      [Stage(2, [256], digits=1)], tokens_per_batch=512, val_lengths=[256], val_per_length=2,
                      needle=NeedleSettings(modality="image"), cache=str(tmp_path / "needles"), workers=1, val_digits=1)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    assert batch["pixel_values"].shape[0] > 0 and len(batch["image_grid_thw"]) >= 1
    sample = data.val_windows[0][0]
    user = next(m for m in sample.messages if m["role"] == "user")["content"]
    text = "".join(e.get("text", "") for e in user)
    assert sample.extra["modality"] == "image" and any(e["type"] == "image" for e in user)
    assert str(sample.answer) not in text  # the value is visible only in the image
    with pytest.raises(ValueError, match="modality"):
        NeedleSettings(modality="audio")
