"""Evolutionary search for rendering configs: maximise compression subject to a legibility
floor (Glyph's LLM-driven search, here a plain genetic algorithm with a reproducible seed).

A candidate is a dict of genes (the search space, recipes as data in render/search-space.yaml:
categorical genes list values, numeric genes give [low, high, step]). Fitness: feasible
candidates (legibility >= floor) rank by compression ratio, above every infeasible one,
which rank by legibility. Each generation keeps the elite, fills the rest by tournament
selection, uniform crossover and per-gene mutation, until the evaluation budget is spent.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmlong import tokens as tk
from mmlong.render.glyph import RenderConfig, RenderedPage, compression, render_text

Scorer = Callable[[str, list[RenderedPage]], float]
"""Legibility of a rendering in [0, 1]: OCR accuracy, a VLM's answer accuracy, ..."""


@dataclass
class SearchSettings:
    """Settings of one search."""

    floor: float = 0.9
    """Minimum legibility a config must reach to count."""
    population: int = 8
    budget: int = 40
    """Configs evaluated in all (the initial population included)."""
    mutation: float = 0.25
    """Probability that each gene of a child is redrawn."""
    crossover: float = 0.9
    """Probability that a child mixes two parents (else copies one)."""
    elite: int = 2
    tournament: int = 3
    seed: int = 0
    top: int = 3
    """Best configs written as presets."""

    def __post_init__(self) -> None:
        if not (0 < self.floor <= 1 and self.population >= 2 and self.budget >= self.population
                and 0 <= self.elite < self.population and 0 <= self.mutation <= 1 and 0 <= self.crossover <= 1):
            raise ValueError(f"inconsistent search settings: {self}")


@dataclass
class Evaluation:
    genes: dict[str, Any]
    ratio: float
    legibility: float
    feasible: bool
    generation: int

    def key(self) -> tuple:
        return (self.feasible, self.ratio if self.feasible else self.legibility)


@dataclass
class SearchResult:
    evaluations: list[Evaluation] = field(default_factory=list)

    def best(self, n: int = 1) -> list[Evaluation]:
        return sorted(self.evaluations, key=Evaluation.key, reverse=True)[:n]


def _values(spec: list) -> list:
    if len(spec) == 3 and all(isinstance(v, (int, float)) for v in spec):
        low, high, step = spec
        n = int(round((high - low) / step))
        return [round(low + i * step, 6) for i in range(n + 1)]
    return list(spec)


def load_space(space: dict[str, list]) -> dict[str, list]:
    known = {"dpi", "page_size", "font", "font_size", "line_extra", "align", "margins", "hscale", "palette", "indent"}
    unknown = set(space) - known - {"description"}
    if unknown:
        raise ValueError(f"unknown genes in the search space: {sorted(unknown)}; known: {sorted(known)}")
    return {k: _values(v) for k, v in space.items() if k != "description"}


def to_config(genes: dict[str, Any], base: RenderConfig) -> RenderConfig:
    """A RenderConfig from genes; genes not in the space keep `base`'s values."""
    values = base.to_dict()
    for name, value in genes.items():
        if name == "line_extra":
            continue
        if name == "palette":
            values["color"], values["background"] = value
        else:
            values[name] = value
    values["line_height"] = values["font_size"] + genes["line_extra"] if "line_extra" in genes else values["line_height"]
    return RenderConfig(**values)


def _mutate(genes: dict, space: dict[str, list], rate: float, rng: random.Random) -> dict:
    child = dict(genes)
    for name, values in space.items():
        if rng.random() < rate:
            if all(isinstance(v, (int, float)) for v in values):  # step to a near value
                i = values.index(child[name]) + rng.choice([-2, -1, 1, 2])
                child[name] = values[min(max(i, 0), len(values) - 1)]
            else:
                child[name] = rng.choice(values)
    return child


def search(
    text: str,
    score: Scorer,
    space: dict[str, list],
    settings: SearchSettings = SearchSettings(),
    base: RenderConfig | None = None,
    pixel_budget: tk.PixelBudget = tk.DEFAULT_BUDGET,
    progress: Callable[[Evaluation], None] | None = None,
) -> SearchResult:
    """Search `space` for configs rendering `text` with the most compression at a legibility
    of at least `settings.floor`, as judged by `score`. Same seed, same result."""
    rng = random.Random(settings.seed)
    space = load_space(space)
    base = base or RenderConfig()
    result = SearchResult()
    seen: dict[str, Evaluation] = {}

    def evaluate(genes: dict, generation: int) -> Evaluation | None:
        """The evaluation of `genes`, None when they make no valid config (margins too wide
        for the page, ...)."""
        key = json.dumps(genes, sort_keys=True)
        if key not in seen:
            try:
                cfg = to_config(genes, base)
            except ValueError:
                return None
            pages = render_text(text, cfg, pixel_budget)
            ratio = compression(text, pages).ratio
            legible = float(score(text, pages))
            seen[key] = Evaluation(genes, ratio, legible, legible >= settings.floor, generation)
            result.evaluations.append(seen[key])
            if progress:
                progress(seen[key])
        return seen[key]

    def tournament(pool: list[Evaluation]) -> Evaluation:
        return max(rng.sample(pool, min(settings.tournament, len(pool))), key=Evaluation.key)

    population: list[Evaluation] = []
    for _ in range(50 * settings.population):
        if len(population) == settings.population:
            break
        if (e := evaluate({k: rng.choice(v) for k, v in space.items()}, 0)) is not None:
            population.append(e)
    if not population:
        raise ValueError("no gene combination of the search space makes a valid render config")
    generation = 0
    while len(result.evaluations) < settings.budget:
        generation += 1
        ranked = sorted(population, key=Evaluation.key, reverse=True)
        nxt = ranked[: settings.elite]
        attempts = 0
        while len(nxt) < settings.population and len(result.evaluations) < settings.budget and attempts < 50 * settings.population:
            attempts += 1
            a, b = tournament(population), tournament(population)
            genes = ({k: rng.choice([a.genes[k], b.genes[k]]) for k in space} if rng.random() < settings.crossover
                     else dict(a.genes))
            if (e := evaluate(_mutate(genes, space, settings.mutation, rng), generation)) is not None:
                nxt.append(e)
        if attempts >= 50 * settings.population:
            break  # the space is exhausted
        population = nxt
    return result


def ocr_scorer(engine: str = "auto") -> Scorer:
    from mmlong.render.ocr import engine as ocr_engine
    from mmlong.render.ocr import legibility

    read = ocr_engine(engine)
    return lambda text, pages: legibility(text, [p.image for p in pages], read)


def write_results(result: SearchResult, out: Path, settings: SearchSettings, base: RenderConfig) -> list[Path]:
    """Write every evaluation (search.jsonl), the best configs as presets (best-N.yaml) and a
    plot of compression against legibility (search.png). Returns the preset paths."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    with (out / "search.jsonl").open("w") as f:
        for e in result.evaluations:
            f.write(json.dumps(asdict(e)) + "\n")
    presets = []
    for rank, e in enumerate(result.best(settings.top), 1):
        data = {"description": f"render-search #{rank}: compression {e.ratio:.2f}x at legibility {e.legibility:.3f} "
                               f"(floor {settings.floor}, seed {settings.seed})", **to_config(e.genes, base).to_dict()}
        path = out / f"best-{rank}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        presets.append(path)
    _plot(result, out / "search.png", settings)
    return presets


def _plot(result: SearchResult, path: Path, settings: SearchSettings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    for feasible, color, label in [(True, "tab:blue", "legible"), (False, "tab:gray", "below the floor")]:
        pts = [(e.ratio, e.legibility) for e in result.evaluations if e.feasible == feasible]
        if pts:
            ax.scatter(*zip(*pts), c=color, label=label, alpha=0.7)
    best = result.best(settings.top)
    ax.scatter([e.ratio for e in best], [e.legibility for e in best], s=160, facecolors="none", edgecolors="tab:red", label="best")
    ax.axhline(settings.floor, color="tab:red", linestyle="--", linewidth=1)
    ax.set_xlabel("compression (text tokens / vision tokens)")
    ax.set_ylabel("legibility")
    ax.set_title(f"render search: {len(result.evaluations)} configs, seed {settings.seed}")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
