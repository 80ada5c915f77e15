"""The model a run trains: a transformers Qwen2.5-VL (or another image-text-to-text model)
built from a config or loaded from a local checkpoint folder, with the long-context settings
applied: RoPE base and scaling, fp32 RoPE frequencies under bf16, gradient checkpointing and
a frozen vision tower."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ModelSettings:
    """Which model, and how it is set up for long context."""

    path: str | None = None
    """A local Hugging Face checkpoint folder (no hub access is assumed)."""
    config: dict[str, Any] | None = None
    """Or: Qwen2_5_VLConfig arguments for a model built from scratch (seeded init)."""
    rope_theta: float | None = None
    """New M-RoPE base (MMProLong: 1e6 -> 4e6 for 128K); None keeps the model's."""
    rope_scaling: dict[str, Any] | None = None
    """RoPE scaling, e.g. {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    or {"rope_type": "linear", "factor": 4.0}; mrope_section is kept."""
    max_position_embeddings: int | None = None
    attn_implementation: str = "sdpa_packed"
    """sdpa_packed (SDPA on each packed sample alone, `mmlong.train.attention`), sdpa, eager or
    flash_attention_2; packed samples are kept apart by their position ids in each."""
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    """Non-reentrant activation checkpointing of every decoder layer."""
    freeze_vision: bool = True
    """Keep the vision tower fixed (it then runs under no_grad)."""
    seed: int = 0
    """Seed of the initial weights of a model built from `config`."""

    def __post_init__(self) -> None:
        if (self.path is None) == (self.config is None):
            raise ValueError("model: give exactly one of path (a checkpoint folder) and config (a model built from scratch)")
        if self.path is not None and not (Path(self.path) / "config.json").is_file():
            raise ValueError(f"model.path {self.path}: no config.json there (a Hugging Face checkpoint folder is needed)")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.rope_theta is not None and self.rope_theta <= 0:
            raise ValueError(f"model.rope_theta must be positive, got {self.rope_theta}")


def tiny_config(vocab_size: int = 151936, hidden_size: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                intermediate_size: int = 128, max_position_embeddings: int = 32768, rope_theta: float = 1e6) -> dict[str, Any]:
    """Qwen2_5_VLConfig arguments of a tiny Qwen2.5-VL over the real Qwen vocabulary (a vision
    tower of depth 2, width 32), the size tests and CPU recipes train."""
    half = hidden_size // heads // 2  # M-RoPE sections split half the head dim as Qwen2.5-VL's [16, 24, 24] of 64
    section = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    return {
        "text_config": {"vocab_size": vocab_size, "hidden_size": hidden_size, "intermediate_size": intermediate_size,
                        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                        "max_position_embeddings": max_position_embeddings, "tie_word_embeddings": True,
                        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta, "mrope_section": section}},
        "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": hidden_size,
                          "patch_size": 14, "temporal_patch_size": 2, "spatial_merge_size": 2, "window_size": 112,
                          "fullatt_block_indexes": [1], "tokens_per_second": 2},
        "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "tie_word_embeddings": True,
    }


def text_config(model):
    return getattr(model.config, "text_config", model.config)


def decoder(model):
    """The text decoder (its `layers`, `rotary_emb`)."""
    inner = model.model
    return getattr(inner, "language_model", inner)


def set_rope(model, theta: float | None = None, scaling: dict[str, Any] | None = None) -> None:
    """Change the RoPE base and/or scaling of a built model and recompute its frequencies in
    fp32 (also what keeps them fp32 after a cast to bf16: casting the buffer rounds the
    frequencies and gives radians of angle error at position 131071)."""
    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = text_config(model)
    params = dict(cfg.rope_parameters)
    if theta is not None:
        params["rope_theta"] = float(theta)
    if scaling is not None:
        params.update(scaling)
    cfg.rope_parameters = params
    rotary = decoder(model).rotary_emb
    rotary.rope_type = params.get("rope_type", "default")
    init = rotary.compute_default_rope_parameters if rotary.rope_type == "default" else ROPE_INIT_FUNCTIONS[rotary.rope_type]
    inv_freq, rotary.attention_scaling = init(cfg, device=rotary.inv_freq.device)
    rotary.register_buffer("inv_freq", inv_freq.to(torch.float32), persistent=False)
    rotary.original_inv_freq = rotary.inv_freq.clone()


def check_fits(config, dtype) -> None:
    """Refuse, before allocating anything, a model from `config` whose weights alone exceed
    this machine's memory (an empty `config` means Qwen2.5-VL-7B)."""
    import os

    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForImageTextToText.from_config(config).parameters())
    need = params * torch.finfo(dtype).bits // 8
    have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > have:
        raise ValueError(f"model.config describes {params / 1e9:.1f}B parameters ({need / 2**30:.0f} GiB in {dtype}), "
                         f"more than this machine's {have / 2**30:.0f} GiB: give a smaller config or a checkpoint path")


def build_model(settings: ModelSettings):
    """The model of `settings`, in train mode, with its long-context settings applied."""
    import torch
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig

    from mmlong.train import attention

    dtype = getattr(torch, settings.dtype)
    if settings.attn_implementation == attention.NAME:
        attention.register()
    if settings.path is not None:
        model = AutoModelForImageTextToText.from_pretrained(settings.path, dtype=dtype,
                                                            attn_implementation=settings.attn_implementation)
    else:
        config = Qwen2_5_VLConfig(**settings.config)
        check_fits(config, dtype)
        torch.manual_seed(settings.seed)
        model = AutoModelForImageTextToText.from_config(config, attn_implementation=settings.attn_implementation)
        model = model.to(dtype)
    if settings.max_position_embeddings is not None:
        text_config(model).max_position_embeddings = settings.max_position_embeddings
    set_rope(model, settings.rope_theta, settings.rope_scaling)  # after any cast: frequencies stay fp32
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if settings.freeze_vision and hasattr(model.model, "visual"):
        model.model.visual.requires_grad_(False)
    text_config(model).use_cache = False  # packed rows must never build a cache (samples would see each other)
    return model.train()
