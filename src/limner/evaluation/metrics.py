"""What the evaluation counts: recognition, placement, and a Frechet distance.

All functions here are pure: they take the evaluator's `Detections` and the dataset's
scene specs (which emoji is where) and return numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from limner.data.emoji import Scene
from limner.evaluation.evaluator import Detections

# A named emoji counts as *found* in a scene when it is among the evaluator's top 5
# concepts for the image: the same bar as top-5 recognition of a single emoji, lenient
# enough for look-alikes (the many yellow faces), strict among 1117 concepts.
FOUND_RANK = 5


@dataclass(frozen=True)
class ImageScore:
    """One image judged against the scene it was asked to show."""

    kind: str  # the held-out kind: single_template, single_synonym, pair, ...
    n_items: int
    top1: bool  # the first named emoji is the evaluator's top concept
    top5: bool  # ... among its top five
    found_all: bool  # every named emoji is among the top FOUND_RANK
    placed: bool  # found_all, and every relation holds between their centres
    items_found: int = 0  # how many of the named emoji are among the top FOUND_RANK


def relation_holds(relation: str, a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether centre a is `relation` centre b ("left of", "right of", "above", "below")."""
    if relation == "left of":
        return a[0] < b[0]
    if relation == "right of":
        return a[0] > b[0]
    if relation == "above":
        return a[1] < b[1]
    if relation == "below":
        return a[1] > b[1]
    raise ValueError(f"unknown relation {relation!r}")


def score_image(det: Detections, b: int, scene: Scene, kind: str) -> ImageScore:
    """Judge image b of `det` against `scene` (the spec the prompt was made from)."""
    ids = [p.concept for p in scene.items]
    rank = det.rank_of(b, ids[0])
    items_found = sum(det.rank_of(b, c) < FOUND_RANK for c in ids)
    found = items_found == len(ids)
    placed = found
    if found and scene.relation is not None:
        centres = det.centers[b]
        placed = all(
            relation_holds(scene.relation, centres[a].tolist(), centres[c].tolist())
            for a, c in zip(ids[:-1], ids[1:], strict=True)
        )
    return ImageScore(kind, len(ids), rank == 0, rank < 5, found, placed, items_found)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D), as in FID
    (Heusel et al. 2017): |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    from scipy import linalg

    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets of shapes {a.shape} and {b.shape} do not match")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Frechet distance needs at least two samples on each side")
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # singular with fewer samples than dimensions: handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():  # near-singular product: regularise, as FID does
        eps = 1e-6 * np.eye(a.shape[1])
        covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = np.real(covmean)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


@dataclass(frozen=True)
class Summary:
    """Rates over a set of `ImageScore`s (None where the set has no image of that kind)."""

    count: int
    single_top1: float | None
    single_top5: float | None
    pair_placed: float | None  # two-emoji scenes: both found on their named sides
    triple_placed: float | None
    synonym_top1: float | None  # single emoji named by a held-out synonym
    name_top1: float | None  # the same scenes named by the trained name (control)


def _rate(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def summarise(scores: Sequence[ImageScore], controls: Sequence[ImageScore] = ()) -> Summary:
    singles = [s for s in scores if s.n_items == 1]
    return Summary(
        count=len(scores),
        single_top1=_rate([s.top1 for s in singles]),
        single_top5=_rate([s.top5 for s in singles]),
        pair_placed=_rate([s.placed for s in scores if s.n_items == 2]),
        triple_placed=_rate([s.placed for s in scores if s.n_items == 3]),
        synonym_top1=_rate([s.top1 for s in scores if s.kind == "single_synonym"]),
        name_top1=_rate([s.top1 for s in controls]),
    )
