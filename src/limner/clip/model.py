"""limner's small CLIP: transformers' `CLIPModel`, sized for 64x64 emoji scenes.

Contrastive image-text pre-training (Radford et al. 2021, "Learning Transferable Visual
Models From Natural Language Supervision") on the emoji dataset's real renders and
captions. The model is a plain `CLIPModel` saved in transformers' folder layout
(config.json, model.safetensors, tokenizer files, preprocessor_config.json), so the code
that ranks images with it (`limner.ranking`) reads real CLIP weights the same way.

The tokenizer is a byte-level BPE of 4096 tokens trained on the training captions (not
CLIP's 49408-token vocabulary, whose embedding table alone would be 9.5M parameters);
words it never saw, like held-out synonyms, still split into known pieces.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_TOKENS = 48  # the longest training caption is about 30 tokens


@dataclass(frozen=True)
class SmallClipConfig:
    """The sizes of limner's small CLIP (the rest is transformers' CLIPConfig default)."""

    image_size: int = 64
    patch_size: int = 8  # 8x8 patches: 64 patch tokens + the class token
    vision_width: int = 192
    vision_layers: int = 3
    text_width: int = 192
    text_layers: int = 3
    heads: int = 3
    projection_dim: int = 128
    vocab_size: int = 4096
    max_tokens: int = MAX_TOKENS

    def to_json(self) -> dict:
        return asdict(self)


def train_tokenizer(captions: Iterable[str], vocab_size: int, max_tokens: int = MAX_TOKENS):
    """A byte-level BPE tokenizer (transformers `PreTrainedTokenizerFast`) for captions.

    Sequences are `<|startoftext|> ... <|endoftext|>`, padded with `<|endoftext|>`: CLIP's
    text model pools the hidden state at the first end-of-text token.
    """
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(captions, trainer)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, bos), (EOS, eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=None,
        model_max_length=max_tokens,
    )


def build_clip(config: SmallClipConfig, tokenizer):
    """A randomly initialised `CLIPModel` of these sizes for this tokenizer."""
    from transformers import CLIPConfig, CLIPModel

    eos = tokenizer.convert_tokens_to_ids(EOS)
    clip_config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": config.text_width,
            "intermediate_size": 4 * config.text_width,
            "num_hidden_layers": config.text_layers,
            "num_attention_heads": config.heads,
            "max_position_embeddings": config.max_tokens,
            "bos_token_id": tokenizer.convert_tokens_to_ids(BOS),
            "eos_token_id": eos,
            "pad_token_id": eos,
            "projection_dim": config.projection_dim,
        },
        vision_config={
            "image_size": config.image_size,
            "patch_size": config.patch_size,
            "hidden_size": config.vision_width,
            "intermediate_size": 4 * config.vision_width,
            "num_hidden_layers": config.vision_layers,
            "num_attention_heads": config.heads,
            "projection_dim": config.projection_dim,
        },
        projection_dim=config.projection_dim,
    )
    return CLIPModel(clip_config)


# Inputs are scaled to [-1, 1], as the rest of limner does (not ImageNet statistics).
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]


def preprocessor_config(image_size: int) -> dict:
    """A `CLIPImageProcessor` config, in the file real CLIP folders carry."""
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": image_size},
        "resample": 3,  # bicubic
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": IMAGE_MEAN,
        "image_std": IMAGE_STD,
        "do_convert_rgb": True,
    }


def save_clip(model, tokenizer, folder: Path, *, fp16: bool = True) -> Path:
    """The transformers folder layout: config.json, model.safetensors, tokenizer files,
    preprocessor_config.json; fp16 weights by default."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    to_save = model
    if fp16:
        import copy

        to_save = copy.deepcopy(model).to(torch.float16)
    to_save.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    size = model.config.vision_config.image_size
    (folder / "preprocessor_config.json").write_text(
        json.dumps(preprocessor_config(size), indent=1) + "\n"
    )
    return folder


def builtin_clip_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("limner") / "builtin" / "clip"))
