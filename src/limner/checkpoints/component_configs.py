"""The diffusers/transformers component configs shipped in ``configs/`` (see its README).

Everything here reads package data only; nothing touches the Hugging Face hub.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from .arch import ArchInfo

ComponentName = Literal["unet", "vae", "text_encoder", "text_encoder_2", "scheduler"]
PadStyle = Literal["endoftext", "bang"]


def configs_dir() -> Path:
    """Folder of the shipped configs (a real directory for any normal installation)."""
    return Path(str(resources.files("limner.checkpoints").joinpath("configs")))


@cache
def _read_json(relative: str) -> dict[str, Any]:
    return json.loads((configs_dir() / relative).read_text(encoding="utf-8"))


def read_config(relative: str) -> dict[str, Any]:
    """A fresh copy of one shipped JSON config, e.g. ``read_config("sd1/unet.json")``."""
    return json.loads(json.dumps(_read_json(relative)))


def _unet_file(arch: ArchInfo) -> str:
    if arch.inpainting:
        return f"{arch.family}/unet_inpaint.json"
    if arch.family == "sd2" and arch.prediction_type != "v_prediction":
        return "sd2/unet_512.json"  # the epsilon 2.x models are the 512 px "base" ones
    return f"{arch.family}/unet.json"


def _scheduler_file(arch: ArchInfo) -> str:
    if arch.family == "sd2" and arch.prediction_type == "v_prediction":
        return "sd2/scheduler_v.json"
    return f"{arch.family}/scheduler.json"


def default_component_configs(arch: ArchInfo) -> dict[str, dict[str, Any]]:
    """Configs of every component of ``arch``; the scheduler gets ``arch``'s prediction type."""
    configs = {
        "unet": read_config(_unet_file(arch)),
        "vae": read_config(f"{arch.family}/vae.json"),
        "text_encoder": read_config(f"{arch.family}/text_encoder.json"),
        "scheduler": read_config(_scheduler_file(arch)),
    }
    if arch.family == "sdxl":
        configs["text_encoder_2"] = read_config("sdxl/text_encoder_2.json")
    configs["scheduler"]["prediction_type"] = arch.prediction_type or "epsilon"
    return configs


def merge_configs(
    base: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """Per component, override keys of the shipped config (e.g. a smaller test model)."""
    merged = {name: dict(config) for name, config in base.items()}
    for name, config in (overrides or {}).items():
        merged.setdefault(name, {}).update(config)
    return merged


@cache
def _tokenizer_files() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    folder = configs_dir() / "clip_tokenizer"
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")[1:]
    merges = tuple(tuple(line.split(" ")) for line in lines if line)
    return vocab, merges  # type: ignore[return-value]


def load_clip_tokenizer(pad: PadStyle = "endoftext"):
    """The CLIP BPE tokenizer built from the shipped vocab.json / merges.txt.

    ``pad="endoftext"`` is the SD 1.x / SDXL ``tokenizer`` (pads with ``<|endoftext|>``);
    ``pad="bang"`` is the SD 2.x ``tokenizer`` and SDXL ``tokenizer_2``, which pad with
    ``"!"`` (id 0) as the diffusers releases of those models do.
    """
    from transformers import CLIPTokenizer

    name = "tokenizer_config.json" if pad == "endoftext" else "tokenizer_config_pad_bang.json"
    settings = read_config(f"clip_tokenizer/{name}")
    vocab, merges = _tokenizer_files()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        bos_token=settings["bos_token"],
        eos_token=settings["eos_token"],
        unk_token=settings["unk_token"],
        pad_token=settings["pad_token"],
        # Without an explicit 77, truncation=True has no length to cut to.
        model_max_length=settings["model_max_length"],
    )


def tokenizer_pads(family: str) -> dict[str, PadStyle]:
    """Which tokenizers a family uses and how each pads."""
    if family == "sd1":
        return {"tokenizer": "endoftext"}
    if family == "sd2":
        return {"tokenizer": "bang"}
    return {"tokenizer": "endoftext", "tokenizer_2": "bang"}


def build_scheduler(config: Mapping[str, Any]):
    """A diffusers scheduler of the class named in ``config["_class_name"]``."""
    import diffusers

    scheduler_cls = getattr(diffusers, str(config["_class_name"]))
    return scheduler_cls.from_config(dict(config))
