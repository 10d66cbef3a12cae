"""Batches of emoji scenes for training, drawn reproducibly per step."""

from __future__ import annotations

import numpy as np

from limner.data.emoji import EmojiDataset
from limner.errors import InvalidRequestError


class SceneBatches:
    """Step k's batch is a function of (seed, k) only, so a resumed run sees the same data.

    `single_fraction` > 0 draws that share of each batch (on average) from the
    single-emoji scenes and the rest from the scenes of two or three; 0 draws uniformly
    from all scenes (40% of which are single in a default dataset).
    """

    def __init__(
        self, data: str, split: str = "train", limit: int = 0, single_fraction: float = 0.0
    ):
        if not 0 <= single_fraction <= 1:
            raise InvalidRequestError(f"--single-fraction must be in [0, 1], not {single_fraction}")
        self.dataset = EmojiDataset(data, split)
        n = len(self.dataset)
        if n == 0:
            raise InvalidRequestError(f"{data}: the {split} split is empty")
        self.size = min(n, limit) if limit > 0 else n
        self.single_fraction = single_fraction
        if single_fraction > 0:
            single = np.array(
                [self.dataset.record(i)["kind"] == "single" for i in range(self.size)]
            )
            self._single, self._multi = np.flatnonzero(single), np.flatnonzero(~single)
            if len(self._single) == 0:
                raise InvalidRequestError(f"{data}: no single-emoji scenes to draw from")
            if single_fraction < 1 and len(self._multi) == 0:
                raise InvalidRequestError(f"{data}: no scenes of two or three emoji to draw")

    def indices(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        if self.single_fraction == 0:
            return rng.integers(0, self.size, size=batch_size)
        pick_single = rng.random(batch_size) < self.single_fraction
        single, multi = (_draw(rng, pool, batch_size) for pool in (self._single, self._multi))
        return np.where(pick_single, single, multi)

    def images(self, indices) -> list[np.ndarray]:
        return [self.dataset[int(i)][0] for i in indices]

    def captions(self, indices) -> list[str]:
        return [self.dataset.record(int(i))["caption"] for i in indices]

    def boxes(self, indices) -> list[list[tuple[int, int, int]]]:
        """Each scene's emoji boxes (x, y, size) in image pixels."""
        return [[(p.x, p.y, p.size) for p in self.dataset.scene(int(i)).items] for i in indices]


def _draw(rng: np.random.Generator, pool: np.ndarray, count: int) -> np.ndarray:
    """`count` indices drawn uniformly from `pool`; zeros for an empty pool (a kind that
    `single_fraction` 1 never picks)."""
    if len(pool) == 0:
        return np.zeros(count, dtype=np.int64)
    return pool[rng.integers(0, len(pool), size=count)]
