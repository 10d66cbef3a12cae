"""Batches of emoji scenes for training, drawn reproducibly per step."""

from __future__ import annotations

import numpy as np

from limner.data.emoji import EmojiDataset
from limner.errors import InvalidRequestError


class SceneBatches:
    """Step k's batch is a function of (seed, k) only, so a resumed run sees the same data."""

    def __init__(self, data: str, split: str = "train", limit: int = 0):
        self.dataset = EmojiDataset(data, split)
        n = len(self.dataset)
        if n == 0:
            raise InvalidRequestError(f"{data}: the {split} split is empty")
        self.size = min(n, limit) if limit > 0 else n

    def indices(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        return rng.integers(0, self.size, size=batch_size)

    def images(self, indices) -> list[np.ndarray]:
        return [self.dataset[int(i)][0] for i in indices]

    def captions(self, indices) -> list[str]:
        return [self.dataset.record(int(i))["caption"] for i in indices]
