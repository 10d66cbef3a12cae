"""`limner eval`: how well a model draws the held-out prompts, judged by the evaluator.

For each held-out scene of the emoji dataset (pairs, templates and synonyms never seen in
training), the model draws the scene's caption; the evaluator, trained on real renders
only, says which emoji it sees and where. The same figures for the real renders of the
same scenes are the ceiling. Held-out synonym prompts are drawn twice with the same
seed: once with the synonym, once with the trained name (the control).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from limner.data.emoji import EmojiDataset, Scene, render_scene
from limner.errors import InputFileError, InvalidRequestError
from limner.evaluation.evaluator import Evaluator, builtin_evaluator_dir, load_evaluator
from limner.evaluation.metrics import ImageScore, Summary, frechet_distance, score_image, summarise
from limner.runtime.device import RuntimeOptions

FULL_COUNT = 200  # ten cycles of the 20 held-out kinds: 120 single, 80 two, 10 three
QUICK_COUNT = 20  # one cycle: every kind once or more
# The dataset the built-in model was last trained on: `limner data emoji --concepts 500`.
DATASET_SEED = 0
DATASET_CONCEPTS = 500
# Prompts denoised together (`api.generate_many`): a small UNet costs less per image in
# a bigger batch; the images are those made one at a time, to float rounding.
GENERATION_BATCH = 8


@dataclass(frozen=True)
class EvalConfig:
    model: str | None = None  # path or registered name; None: the built-in model
    data: Path | None = None  # dataset folder; None: the held-out split, built in the cache
    evaluator: Path | None = None  # None: the built-in evaluator
    count: int = FULL_COUNT
    steps: int = 25
    guidance_scale: float = 7.0
    sampler: str = "DPM++ 2M"
    seed: int = 0  # prompt i is drawn with seed + i
    real_only: bool = False  # only the real renders: the evaluator's own accuracy (the ceiling)
    # Make this many candidates per prompt and score the one the CLIP model ranks first
    # (`generate --candidates N --keep 1`, DALL-E's reranking); None: one image a prompt.
    candidates: int | None = None
    # How the model runs (precision, DeepCache, ...); None: the automatic fast path. The
    # speed modes change the numerics, and this is how their quality is measured.
    runtime: RuntimeOptions | None = None


@dataclass
class Side:
    """The figures for one set of images (generated, or the real renders)."""

    summary: Summary
    frechet: float | None  # to the real renders (for the real side: to other real renders)
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class EvalReport:
    model: str
    count: int
    steps: int
    guidance_scale: float
    sampler: str
    seed: int
    evaluator: str
    generated: Side | None  # None with real_only
    real: Side
    # The real renders encoded and decoded by the model's VAE: what a perfect denoiser
    # could reach with this autoencoder (None with real_only). Tells a weak VAE from a
    # weak UNet.
    autoencoded: Side | None = None
    candidates: int | None = None  # CLIP-ranked candidates per prompt; None: one image
    seconds: float = 0.0
    seconds_per_image: float = 0.0
    runtime: dict | None = None  # the speed settings that ran ("auto" resolved); None: no model

    def to_json(self) -> dict:
        return asdict(self)


def heldout_dataset(data: Path | None, say: Callable[[str], None]) -> EmojiDataset:
    """The held-out split: from `data`, or built once (held-out scenes only) in the cache."""
    if data is not None:
        return EmojiDataset(data, "heldout")
    from limner.data.emoji import build_emoji_dataset
    from limner.home import cache_dir

    folder = cache_dir() / f"emoji-heldout-seed{DATASET_SEED}-concepts{DATASET_CONCEPTS}"
    if not (folder / "heldout.jsonl").is_file():
        say(f"building the held-out split in {folder} (once)")
        build_emoji_dataset(
            folder, train_size=0, heldout_size=2000, seed=DATASET_SEED, concepts=DATASET_CONCEPTS
        )
    return EmojiDataset(folder, "heldout")


def load_checked_evaluator(path: Path | None, ds: EmojiDataset) -> Evaluator:
    folder = path if path is not None else builtin_evaluator_dir()
    evaluator = load_evaluator(folder)
    names = [c.name for c in ds.concepts]
    if evaluator.concepts == names:
        return evaluator
    try:
        # A dataset of fewer concepts (`limner data emoji --concepts N`): the evaluator
        # chooses among that dataset's concepts only.
        return evaluator.restricted_to(names)
    except KeyError as missing:
        raise InputFileError(
            f"the evaluator in {folder} knows other concepts than the dataset in {ds.root} "
            f"({len(evaluator.concepts)} vs {len(names)}; it does not know {missing}): "
            "evaluate with the evaluator trained on that dataset"
        ) from None


def _kind_rates(scores: list[ImageScore]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for kind in sorted({s.kind for s in scores}):
        group = [s for s in scores if s.kind == kind]
        single = group[0].n_items == 1
        out[kind] = {"count": len(group)}
        if single:
            out[kind]["top1"] = sum(s.top1 for s in group) / len(group)
            out[kind]["top5"] = sum(s.top5 for s in group) / len(group)
        else:
            # placed = found on the named sides; found = every named emoji recognised,
            # wherever it is; items_found = the share of named emoji recognised. Together
            # they say whether a scene fails on recognition or on placement.
            out[kind]["placed"] = sum(s.placed for s in group) / len(group)
            out[kind]["found"] = sum(s.found_all for s in group) / len(group)
            out[kind]["items_found"] = sum(s.items_found / s.n_items for s in group) / len(group)
    return out


def _frechet(a: np.ndarray, b: np.ndarray) -> float | None:
    return frechet_distance(a, b) if min(len(a), len(b)) >= 2 else None


def autoencode(model, images: list[Image.Image], seed: int, batch: int = 32) -> list[Image.Image]:
    """The images through the model's VAE, encoded (posterior sampled with seed + i) and
    decoded exactly as img2img at strength 0 would."""
    from limner.pipelines.steps import (
        decode_latents,
        encode_images,
        make_generators,
        pil_to_tensor,
        tensor_to_pil,
    )

    out: list[Image.Image] = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        generators = make_generators([seed + start + i for i in range(len(chunk))])
        latents = encode_images(model, pil_to_tensor(chunk), generators)
        out.extend(tensor_to_pil(decode_latents(model, latents)))
    return out


def evaluate(
    cfg: EvalConfig,
    *,
    say: Callable[[str], None] = lambda _m: None,
    on_image: Callable[[int, int], None] | None = None,
) -> tuple[EvalReport, list[tuple[Image.Image, str]]]:
    """Run the evaluation; returns the report and the generated images with their prompts."""
    from limner import api

    if cfg.count < 2:
        raise InvalidRequestError("evaluate at least 2 held-out prompts")
    if cfg.candidates is not None and cfg.candidates < 2:
        raise InvalidRequestError(f"--candidates ranks at least 2 images, not {cfg.candidates}")
    ds = heldout_dataset(cfg.data, say)
    if 2 * cfg.count > len(ds):
        raise InvalidRequestError(
            f"{ds.root} holds {len(ds)} held-out scenes; at most {len(ds) // 2} can be evaluated "
            "(the others are the real reference for the Frechet distance)"
        )
    evaluator = load_checked_evaluator(cfg.evaluator, ds)
    records = [ds.record(i) for i in range(cfg.count)]
    scenes = [Scene.from_json(r["scene"]) for r in records]
    jobs = [(r["caption"], cfg.seed + i) for i, r in enumerate(records)]
    control_of = {}  # record index -> job index of its trained-name control
    for i, r in enumerate(records):
        if "control_caption" in r:
            control_of[i] = len(jobs)
            jobs.append((r["control_caption"], cfg.seed + i))

    if cfg.real_only:
        jobs = []
    model = api.load(cfg.model, runtime=cfg.runtime) if jobs else None
    t0 = time.perf_counter()
    requests = [
        api.GenerationRequest(
            prompt=prompt,
            model=cfg.model,
            sampler=cfg.sampler,
            steps=cfg.steps,
            guidance_scale=cfg.guidance_scale,
            seed=seed,
            candidates=cfg.candidates,
        )
        for prompt, seed in jobs
    ]
    images: list[Image.Image] = []
    for start in range(0, len(requests), GENERATION_BATCH):
        made = api.generate_many(
            requests[start : start + GENERATION_BATCH], model=model, runtime=cfg.runtime
        )
        images.extend(result[0].image for result in made)
        if on_image:
            on_image(len(images), len(jobs))
    seconds = time.perf_counter() - t0

    real_images = [render_scene(s, ds.sprites) for s in scenes]
    real = evaluator.detect(real_images)
    other_real = evaluator.detect(
        [render_scene(ds.scene(i), ds.sprites) for i in range(cfg.count, 2 * cfg.count)]
    )
    kinds = [r["kind"] for r in records]
    generated = None
    if images:
        gen = evaluator.detect(images)
        gen_scores = [score_image(gen, b, s, kinds[b]) for b, s in enumerate(scenes)]
        controls = [score_image(gen, j, scenes[i], "single_name") for i, j in control_of.items()]
        generated = Side(
            summarise(gen_scores, controls),
            _frechet(gen.features[: cfg.count].numpy(), real.features.numpy()),
            _kind_rates(gen_scores),
        )
    real_scores = [score_image(real, b, s, kinds[b]) for b, s in enumerate(scenes)]
    real_controls = [real_scores[i] for i in control_of]
    autoencoded = None
    if model is not None:
        ae = evaluator.detect(autoencode(model, real_images, cfg.seed))
        ae_scores = [score_image(ae, b, s, kinds[b]) for b, s in enumerate(scenes)]
        autoencoded = Side(
            summarise(ae_scores, [ae_scores[i] for i in control_of]),
            _frechet(ae.features.numpy(), real.features.numpy()),
            _kind_rates(ae_scores),
        )
    n = cfg.count
    report = EvalReport(
        model=(model.name if model is not None else None) or str(cfg.model or "builtin"),
        count=n,
        steps=cfg.steps,
        guidance_scale=cfg.guidance_scale,
        sampler=cfg.sampler,
        seed=cfg.seed,
        evaluator=str(cfg.evaluator or "builtin"),
        generated=generated,
        candidates=cfg.candidates,
        real=Side(
            summarise(real_scores, real_controls),
            _frechet(other_real.features.numpy(), real.features.numpy()),
            _kind_rates(real_scores),
        ),
        autoencoded=autoencoded,
        seconds=seconds,
        seconds_per_image=seconds / len(jobs) if jobs else 0.0,
        runtime=api.runtime_record(cfg.runtime, model) if model is not None else None,
    )
    return report, list(zip(images[:n], [p for p, _ in jobs[:n]], strict=True))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _describe_runtime(record: dict) -> str:
    parts = [record["precision"]]
    if record.get("deepcache"):
        parts.append(f"DeepCache every {record['deepcache']['interval']} steps")
    if not record.get("channels_last", True):
        parts.append("no channels-last")
    if record.get("compile"):
        parts.append("compiled")
    if record.get("token_merging"):
        parts.append(f"token merging {record['token_merging']:g}")
    if record.get("fast_decode"):
        parts.append("tiny decoder")
    return ", ".join(parts)


def format_report(r: EvalReport) -> str:
    empty = Summary(0, None, None, None, None, None, None)
    sides = [r.generated, r.autoencoded, r.real]
    summaries = [side.summary if side else empty for side in sides]

    def row(label: str, field: str) -> tuple[str, ...]:
        return (label, *(_pct(getattr(s, field)) for s in summaries))

    rows = [
        row("single emoji: top-1", "single_top1"),
        row("single emoji: top-5", "single_top5"),
        row("two emoji: both on their named sides", "pair_placed"),
        row("three emoji: all on their named sides", "triple_placed"),
        row("held-out synonyms: top-1", "synonym_top1"),
        row("  same scenes, trained names: top-1", "name_top1"),
        (
            "Frechet distance to real (evaluator features)",
            *("-" if s is None or s.frechet is None else f"{s.frechet:.2f}" for s in sides),
        ),
    ]
    if r.generated is None:
        head = f"limner eval: real renders of {r.count} held-out scenes, evaluator {r.evaluator}"
    else:
        head = (
            f"limner eval: model {r.model}, {r.count} held-out prompts, {r.sampler}, "
            f"{r.steps} steps, guidance {r.guidance_scale:g}, seed {r.seed}, "
            f"evaluator {r.evaluator}"
            + (f", best of {r.candidates} by CLIP" if r.candidates else "")
        )
    width = max(len(line[0]) for line in rows)
    columns = (("generated", 10), ("VAE round trip", 14), ("real (ceiling)", 14))
    lines = [head, f"{'':{width}}" + "".join(f"  {name:>{w}}" for name, w in columns)]
    lines += [
        f"{cells[0]:{width}}"
        + "".join(f"  {cell:>{w}}" for cell, (_, w) in zip(cells[1:], columns, strict=True))
        for cells in rows
    ]
    if r.generated is not None:
        lines.append(f"{r.seconds:.1f} s generating ({r.seconds_per_image:.2f} s an image)")
    if r.runtime is not None:
        lines.append("runtime: " + _describe_runtime(r.runtime))
    lines.append(
        "VAE round trip: the real renders encoded and decoded by the model's VAE (what a "
        "perfect denoiser could reach); the real column's Frechet distance is between two "
        "disjoint sets of real renders"
    )
    return "\n".join(lines)


def prompt_grid(
    items: list[tuple[Image.Image, str]], columns: int = 5, scale: int = 2
) -> Image.Image:
    """A grid of images with their prompts underneath (for the README)."""
    import textwrap

    from PIL import ImageDraw, ImageFont

    cell = 128 * scale
    text_h, pad = 58, 8
    rows = max(1, -(-len(items) // columns))
    sheet = Image.new(
        "RGB", (columns * (cell + pad) + pad, rows * (cell + text_h + pad) + pad), "white"
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for k, (image, prompt) in enumerate(items):
        x = pad + (k % columns) * (cell + pad)
        y = pad + (k // columns) * (cell + text_h + pad)
        sheet.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST), (x, y))
        for j, line in enumerate(textwrap.wrap(prompt, int(cell / 6.4))[:4]):
            draw.text((x, y + cell + 2 + 14 * j), line, fill="black", font=font)
    return sheet


def save_grid(items: list[tuple[Image.Image, str]], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prompt_grid(items).save(path)
    return path
