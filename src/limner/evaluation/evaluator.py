"""The evaluator: a small fully convolutional emoji detector, trained on real renders only.

It scores generated images (`limner eval`) and is never trained on generated ones. One
network answers both questions the evaluation asks:

- *which emoji is in the image* (single-emoji prompts): a class score per concept, the
  highest probability the concept reaches in any cell of the output grid;
- *which emoji is on which side* (scenes): where each concept is, the probability-weighted
  centre of its cells.

Why a per-cell classifier rather than one label per image or crops: a scene holds two or
three emoji at unknown places and sizes; labelling each cell of an 8x8 grid with the emoji
that covers it (or background) is a segmentation-style target that the dataset's specs
give for free, and a single forward pass then gives both identity and place. Input is
64x64 (the 128x128 image box-filtered): the smallest emoji (32 px) is still 16 px there,
and the network stays at about 0.6M parameters (57M multiply-adds an image), cheap to
train on two shared CPU cores.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from limner.errors import ModelLoadError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CONCEPTS_NAME = "concepts.json"


@dataclass(frozen=True)
class EvaluatorConfig:
    """Architecture of the evaluator; round-trips through config.json."""

    num_concepts: int
    input_size: int = 64  # the 128x128 canvas, box-filtered by 2
    widths: tuple[int, ...] = (32, 64, 128)  # stem (stride 2), then one stage per stride 2
    canvas: int = 128  # the image size the grid cells are laid over

    @property
    def grid(self) -> int:
        """Cells per side of the output grid (stride 2 ** len(widths))."""
        return self.input_size // 2 ** len(self.widths)

    @property
    def background(self) -> int:
        """Index of the background class (after the concepts)."""
        return self.num_concepts

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    def to_json(self) -> dict:
        return {"model_type": "limner-emoji-evaluator", **asdict(self)}

    @classmethod
    def from_json(cls, d: dict) -> EvaluatorConfig:
        return cls(
            num_concepts=int(d["num_concepts"]),
            input_size=int(d["input_size"]),
            widths=tuple(int(w) for w in d["widths"]),
            canvas=int(d["canvas"]),
        )


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class EmojiEvaluator(nn.Module):
    """(B, 3, 64, 64) in [-1, 1] -> per-cell logits (B, C + 1, 8, 8) and features (B, D=128)."""

    def __init__(self, config: EvaluatorConfig):
        super().__init__()
        self.config = config
        w = config.widths
        layers: list[nn.Module] = [_conv(3, w[0], stride=2)]
        for cin, cout in zip(w[:-1], w[1:], strict=True):
            layers += [_conv(cin, cout, stride=2), _conv(cout, cout)]
        # Two dilated layers at the grid resolution: each cell sees the whole canvas, so a
        # cell on the edge of a large emoji still knows what the emoji is.
        layers += [_conv(w[-1], w[-1], dilation=2), _conv(w[-1], w[-1], dilation=2)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(w[-1], config.num_concepts + 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)  # (B, D, g, g)
        return self.head(h), h.mean(dim=(2, 3))


# ------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------


def images_to_tensor(images: list[Image.Image] | list[np.ndarray], size: int) -> torch.Tensor:
    """RGB images of any size -> (B, 3, size, size) float in [-1, 1] (box filter down)."""
    out = []
    for im in images:
        if isinstance(im, np.ndarray):
            im = Image.fromarray(im)
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BOX)
        out.append(np.asarray(im))
    arr = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()
    return arr / 127.5 - 1.0


# ------------------------------------------------------------------------------------------
# Reading the output
# ------------------------------------------------------------------------------------------


@dataclass
class Detections:
    """What the evaluator sees in a batch of images.

    scores: (B, C) the highest probability each concept reaches in any cell;
    centers: (B, C, 2) (x, y) in canvas pixels, each concept's probability-weighted centre;
    features: (B, D) pooled features (for the Frechet distance).
    """

    scores: torch.Tensor
    centers: torch.Tensor
    features: torch.Tensor
    canvas: int = 128
    _order: torch.Tensor | None = field(default=None, repr=False)

    def ranking(self) -> torch.Tensor:
        """(B, C) concept ids, best first."""
        if self._order is None:
            self._order = self.scores.argsort(dim=1, descending=True)
        return self._order

    def rank_of(self, b: int, concept: int) -> int:
        """0-based place of `concept` in image b's ranking."""
        return int((self.scores[b] > self.scores[b, concept]).sum())

    def top(self, b: int, k: int) -> list[int]:
        return [int(c) for c in self.ranking()[b, :k]]


def detect_from_logits(logits: torch.Tensor, features: torch.Tensor, canvas: int) -> Detections:
    """Per-cell logits (B, C+1, g, g) -> `Detections`."""
    probs = logits.float().softmax(dim=1)[:, :-1]  # (B, C, g, g), background dropped
    b, c, g, _ = probs.shape
    flat = probs.reshape(b, c, g * g)
    scores = flat.amax(dim=2)
    cell = canvas / g
    coords = (torch.arange(g, dtype=torch.float32) + 0.5) * cell
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    mass = flat.sum(dim=2).clamp_min(1e-12)
    cx = (flat * xs.reshape(1, 1, -1)).sum(dim=2) / mass
    cy = (flat * ys.reshape(1, 1, -1)).sum(dim=2) / mass
    return Detections(scores, torch.stack([cx, cy], dim=2), features.float(), canvas)


class Evaluator:
    """A loaded evaluator: the network, its config and the concept names it knows."""

    def __init__(
        self, model: EmojiEvaluator, concepts: list[str], classes: list[int] | None = None
    ):
        if len(concepts) != model.config.num_concepts:
            raise ModelLoadError(
                f"the evaluator knows {model.config.num_concepts} concepts but its "
                f"concepts.json names {len(concepts)}"
            )
        self.model = model.eval()
        self.config = model.config
        self.all_concepts = concepts
        # Output classes kept (network class ids, in the order of self.concepts), or all.
        self._classes = classes
        self.concepts = concepts if classes is None else [concepts[i] for i in classes]

    def restricted_to(self, names: list[str]) -> Evaluator:
        """The same network choosing only among `names` (a subset of its concepts, in the
        order given) and the background: a dataset of fewer concepts is judged on its own
        classes, its concept k being the evaluator's k-th output. KeyError names the first
        concept the evaluator does not know."""
        index = {n: i for i, n in enumerate(self.all_concepts)}
        for n in names:
            if n not in index:
                raise KeyError(n)
        return Evaluator(self.model, self.all_concepts, [index[n] for n in names])

    @torch.no_grad()
    def detect(self, images, batch_size: int = 64) -> Detections:
        """`Detections` for a list of PIL images or HxWx3 uint8 arrays."""
        parts = []
        for i in range(0, len(images), batch_size):
            x = images_to_tensor(list(images[i : i + batch_size]), self.config.input_size)
            logits, feats = self.model(x)
            if self._classes is not None:
                keep = [*self._classes, self.config.background]
                logits = logits[:, keep]
            parts.append(detect_from_logits(logits, feats, self.config.canvas))
        return Detections(
            torch.cat([p.scores for p in parts]),
            torch.cat([p.centers for p in parts]),
            torch.cat([p.features for p in parts]),
            self.config.canvas,
        )


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------


def save_evaluator(
    model: EmojiEvaluator,
    concepts: list[str],
    folder: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """config.json, model.safetensors (fp16 by default) and concepts.json in `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, folder / WEIGHTS_NAME, metadata={"format": "pt"})
    (folder / CONFIG_NAME).write_text(json.dumps(model.config.to_json(), indent=1) + "\n")
    (folder / CONCEPTS_NAME).write_text(json.dumps(concepts, ensure_ascii=False, indent=0) + "\n")
    return folder


def load_evaluator(folder: str | os.PathLike) -> Evaluator:
    """An evaluator saved by `save_evaluator` (safetensors only), in float32."""
    from safetensors.torch import load_file

    folder = Path(folder)
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME, CONCEPTS_NAME) if not (folder / n).is_file()]
    if missing:
        raise ModelLoadError(
            f"{folder} is not an evaluator folder (missing {', '.join(missing)}); train one "
            "with `limner train evaluator` or use the built-in one"
        )
    try:
        config = EvaluatorConfig.from_json(json.loads((folder / CONFIG_NAME).read_text()))
        concepts = json.loads((folder / CONCEPTS_NAME).read_text(encoding="utf-8"))
        model = EmojiEvaluator(config)
        state = {
            k: v.float() if v.is_floating_point() else v
            for k, v in load_file(folder / WEIGHTS_NAME).items()
        }
        model.load_state_dict(state)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelLoadError(f"cannot load the evaluator in {folder}: {err}") from err
    return Evaluator(model, concepts)


def builtin_evaluator_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("limner") / "builtin" / "evaluator"))
