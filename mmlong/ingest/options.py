"""Everything that decides the content of an ingested dataset, as one settings object built
from an ingest preset (stored in the dataset's manifest)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from mmlong.ingest.pdf import PdfOptions
from mmlong.ingest.video import VideoOptions
from mmlong.ingest.web import HtmlOptions
from mmlong.presets import build, load_preset
from mmlong.tokens import PixelBudget


@dataclass
class IngestOptions:
    """The sections of an ingest preset: pdf, video, html and the token pixel budget."""

    pdf: PdfOptions = field(default_factory=PdfOptions)
    video: VideoOptions = field(default_factory=VideoOptions)
    html: HtmlOptions = field(default_factory=HtmlOptions)
    tokens: PixelBudget = field(default_factory=PixelBudget)
    """Pixel bounds of the Qwen2.5-VL image processor, which decide image token counts."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestOptions:
        sections = {f.name: f.default_factory for f in fields(cls)}  # each section's class
        unknown = set(data) - set(sections) - {"description"}
        if unknown:
            raise ValueError(f"unknown ingest option section(s): {sorted(unknown)}")
        return cls(**{name: build(section, data.get(name) or {}, name) for name, section in sections.items()})

    @classmethod
    def from_preset(cls, preset: str, overrides: dict[str, dict[str, Any]] | None = None) -> IngestOptions:
        data = load_preset("ingest", preset)
        for section, values in (overrides or {}).items():
            data.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
        return cls.from_dict(data)
