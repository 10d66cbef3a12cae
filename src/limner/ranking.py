"""Ranking candidate images by CLIP score, as DALL-E re-ranked its samples with CLIP.

`limner generate PROMPT --candidates 8 --keep 2` makes eight images and keeps the two whose
CLIP embedding is closest to the prompt's (CLIP score: 100 x cosine similarity, Hessel et
al. 2021). The scorer is any transformers-format CLIP folder (config.json of a
`CLIPModel`, safetensors weights, tokenizer files, and optionally preprocessor_config.json):
limner's own small CLIP (shipped in `limner/builtin/clip`) or real CLIP weights a user has.
Nothing is fetched: the folder is read with `local_files_only`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from limner.errors import InvalidRequestError, ModelLoadError

# OpenAI CLIP's preprocessing, for folders without a preprocessor_config.json.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImagePreprocess:
    """Resize the shortest side, centre-crop, scale to [0, 1], normalise (CLIP's recipe)."""

    shortest_edge: int
    crop: tuple[int, int]  # (height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resample: int = int(Image.Resampling.BICUBIC)

    @classmethod
    def from_folder(cls, folder: Path, image_size: int) -> ImagePreprocess:
        path = folder / "preprocessor_config.json"
        if not path.is_file():
            return cls(image_size, (image_size, image_size), OPENAI_MEAN, OPENAI_STD)
        d = json.loads(path.read_text())
        size = d.get("size", image_size)
        edge = (
            size.get("shortest_edge", size.get("height", image_size))
            if isinstance(size, dict)
            else int(size)
        )
        crop = d.get("crop_size", edge)
        crop_hw = (
            (crop["height"], crop["width"]) if isinstance(crop, dict) else (int(crop), int(crop))
        )
        return cls(
            int(edge),
            (int(crop_hw[0]), int(crop_hw[1])),
            tuple(d.get("image_mean", OPENAI_MEAN)),
            tuple(d.get("image_std", OPENAI_STD)),
            int(d.get("resample", Image.Resampling.BICUBIC)),
        )

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        """(B, 3, crop_h, crop_w) float32 pixel values."""
        out = []
        for im in images:
            im = im.convert("RGB")
            w, h = im.size
            scale = self.shortest_edge / min(w, h)
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), self.resample)
            ch, cw = self.crop
            left, top = (im.width - cw) // 2, (im.height - ch) // 2
            im = im.crop((left, top, left + cw, top + ch))
            out.append(np.asarray(im, dtype=np.float32) / 255.0)
        x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        return (x - mean) / std


def plain_prompt(prompt: str) -> str:
    """The words of an A1111 prompt, without emphasis syntax or BREAK (what CLIP should read)."""
    from limner.prompts.parser import parse_prompt_attention

    # BREAK comes as a fragment of negative weight: it separates words like a space
    parts = [text if weight >= 0 else " " for text, weight in parse_prompt_attention(prompt)]
    return " ".join("".join(parts).split())


class ClipScorer:
    """A CLIP model that scores images against a text."""

    def __init__(self, model, tokenizer, preprocess: ImagePreprocess, source: Path):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.source = source
        limit = model.config.text_config.max_position_embeddings
        self.max_tokens = min(limit, getattr(tokenizer, "model_max_length", limit) or limit)

    @torch.no_grad()
    def text_embedding(self, text: str) -> torch.Tensor:
        tokens = self.tokenizer(
            [plain_prompt(text)],
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        emb = _features(self.model.get_text_features(**tokens)).float()
        return emb / emb.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def image_embeddings(self, images: list[Image.Image], batch_size: int = 32) -> torch.Tensor:
        parts = []
        dtype = next(self.model.parameters()).dtype
        for i in range(0, len(images), batch_size):
            pixels = self.preprocess(images[i : i + batch_size]).to(dtype)
            parts.append(_features(self.model.get_image_features(pixel_values=pixels)).float())
        emb = torch.cat(parts)
        return emb / emb.norm(dim=-1, keepdim=True)

    def scores(self, prompt: str, images: list[Image.Image]) -> list[float]:
        """CLIP score of each image for the prompt: 100 x cosine similarity."""
        if not images:
            return []
        sims = self.image_embeddings(images) @ self.text_embedding(prompt).T  # (N, 1)
        return [float(100 * s) for s in sims[:, 0]]


def _features(out) -> torch.Tensor:
    """transformers 4 returns the projected tensor; 5 an output holding it as pooler_output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def best_indices(scores: list[float], keep: int) -> list[int]:
    """Indices of the `keep` highest scores, best first; ties keep the earlier candidate."""
    if not 1 <= keep <= len(scores):
        raise InvalidRequestError(f"cannot keep {keep} of {len(scores)} candidates")
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:keep]


def builtin_clip_dir() -> Path:
    from limner.clip.model import builtin_clip_dir as folder

    return folder()


def load_clip(path: str | os.PathLike | None = None) -> ClipScorer:
    """A CLIP scorer from a transformers-format folder (None: limner's built-in small CLIP)."""
    from transformers import AutoTokenizer, CLIPModel

    folder = Path(path).expanduser() if path is not None else builtin_clip_dir()
    if path is None and not (folder / "config.json").is_file():
        raise ModelLoadError(
            "this install has no built-in CLIP weights yet: pass --clip with a CLIP model "
            "folder (transformers format), or train one with `limner train clip`"
        )
    if not folder.is_dir():
        raise ModelLoadError(f"CLIP model folder not found: {folder}")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} is not a transformers model folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        pickles = [p.name for p in folder.glob("*.bin")]
        hint = f" (it has {', '.join(pickles)}: convert with `limner convert`)" if pickles else ""
        raise ModelLoadError(f"{folder} has no .safetensors weights{hint}")
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot read {folder / 'config.json'}: {err}") from err
    if model_type != "clip":
        raise ModelLoadError(f"{folder} holds a {model_type!r} model, not a CLIP model")
    try:
        model = CLIPModel.from_pretrained(
            folder, local_files_only=True, use_safetensors=True, torch_dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load the CLIP model in {folder}: {err}") from err
    preprocess = ImagePreprocess.from_folder(folder, model.config.vision_config.image_size)
    return ClipScorer(model, tokenizer, preprocess, folder)


_cache: dict[str, ClipScorer] = {}


def cached_clip(path: str | os.PathLike | None = None) -> ClipScorer:
    """`load_clip`, keeping the last scorer loaded (ranking runs once per request)."""
    key = str(Path(path).expanduser().resolve()) if path is not None else "builtin"
    if key not in _cache:
        _cache.clear()
        _cache[key] = load_clip(path)
    return _cache[key]
