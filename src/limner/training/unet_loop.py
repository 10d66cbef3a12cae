"""The UNet training loop and its export (see `limner.training.unet`)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from limner.checkpoints.hashing import file_sha256
from limner.errors import InvalidRequestError
from limner.models.builtin import builtin_dir, encode_captions, load_text_encoder
from limner.training.common import (
    EMA,
    Progress,
    RunState,
    architecture,
    autocast,
    image_grid,
    images_tensor,
    learning_rate,
    load_checkpoint,
    save_checkpoint,
    start_run,
    step_rng,
    uses_bf16,
)
from limner.training.data import SceneBatches
from limner.training.encode_cache import RowCache, module_sha256
from limner.training.unet import RESUME_KEYS, SAMPLE_PROMPTS, UnetTrainConfig
from limner.training.widen import widen_state_dict, widening_factor


def _folder(init: str, part: str) -> Path:
    folder = builtin_dir() / part if init == "builtin" else Path(init)
    if not (folder / "config.json").is_file():
        raise InvalidRequestError(f"{init}: no diffusers {part} folder at {folder}")
    return folder


def build_unet(
    init: str = "", seed: int = 0, arch: str = ""
) -> tuple[UNet2DConditionModel, list[str]]:
    """The built-in UNet architecture, freshly initialised (seeded) or from weights; with
    both `init` and `arch`, the weights of `init` grown into the architecture `arch`
    (see `grow_unet`). Also returns the names of the grown parameters (else none)."""
    if init and not arch:
        unet = UNet2DConditionModel.from_pretrained(
            _folder(init, "unet"), local_files_only=True, torch_dtype=torch.float32
        )
        return unet, []
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(architecture(arch, "unet_config.json"))
    return unet, grow_unet(unet, _folder(init, "unet"), seed) if init else []


# Parts an architecture may add to a trained UNet, each with the layer that makes its
# output: zeroed, so the grown network computes what the trained one did and the new part
# starts from nothing (as ControlNet's zero convolutions and DiT's adaLN-zero do).
GROWABLE_PARTS = {
    # diffusers' addition_embed_type "text": an attention pool over the token embeddings,
    # added to the timestep embedding (Imagen's pooled text conditioning, as in
    # DeepFloyd IF), so every ResNet block sees what the caption asks for.
    "add_embedding.": "add_embedding.norm2",
}


def grow_unet(unet: UNet2DConditionModel, folder: Path, seed: int = 0) -> list[str]:
    """Load the trained weights in `folder` into `unet`, whose architecture may add
    GROWABLE_PARTS to theirs (the added parts start at zero output) or widen every block
    by one whole factor (`limner.training.widen`; `seed` draws the weights' splits).
    Either way the grown UNet computes what the trained one did. Returns the names of
    the parameters that were not in `folder` (none when widened). Anything else that
    differs (a missing or extra layer, another shape) is an error: growing never drops
    trained weights."""
    from limner.checkpoints.safe_load import load_state_dict

    files = sorted(folder.glob("*.safetensors"))
    if len(files) != 1:
        raise InvalidRequestError(f"{folder}: expected one .safetensors file, found {len(files)}")
    trained = {k: v.float() for k, v in load_state_dict(files[0]).items()}
    own = unet.state_dict()
    factor = widening_factor(json.loads((folder / "config.json").read_text()), unet.config)
    if factor:
        shapes = {name: value.shape for name, value in own.items()}
        generator = torch.Generator().manual_seed(seed)
        unet.load_state_dict(widen_state_dict(trained, shapes, factor, generator))
        return []
    extra = sorted(set(trained) - set(own))
    added = sorted(set(own) - set(trained))
    ungrowable = [k for k in added if not any(k.startswith(p) for p in GROWABLE_PARTS)]
    if extra or ungrowable:
        raise InvalidRequestError(
            f"{folder} does not grow into this architecture: "
            f"{len(extra)} trained weights it lacks ({', '.join(extra[:3])}), "
            f"{len(ungrowable)} new weights it cannot start at zero ({', '.join(ungrowable[:3])})"
        )
    mismatched = [k for k in trained if trained[k].shape != own[k].shape]
    if mismatched:
        raise InvalidRequestError(f"{folder}: other shapes for {', '.join(mismatched[:3])}")
    unet.load_state_dict(trained, strict=False)
    for prefix, output_layer in GROWABLE_PARTS.items():
        if any(k.startswith(prefix) for k in added):
            for p in unet.get_submodule(output_layer).parameters():
                torch.nn.init.zeros_(p)
    return added


def load_frozen_vae(spec: str) -> AutoencoderKL:
    vae = AutoencoderKL.from_pretrained(
        _folder(spec, "vae"), local_files_only=True, torch_dtype=torch.float32
    )
    return vae.eval().requires_grad_(False)


def alphas_cumprod(scheduler_config: dict) -> torch.Tensor:
    """The DDPM schedule's cumulative alpha products, (T,), from the shipped config."""
    n = scheduler_config["num_train_timesteps"]
    b0, b1 = scheduler_config["beta_start"], scheduler_config["beta_end"]
    kind = scheduler_config["beta_schedule"]
    if kind == "scaled_linear":
        betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float64) ** 2
    elif kind == "linear":
        betas = torch.linspace(b0, b1, n, dtype=torch.float64)
    else:
        raise InvalidRequestError(f"beta schedule {kind!r} is not supported by the trainer")
    return torch.cumprod(1.0 - betas, 0).float()


class TextConditioner:
    """Captions -> MiniLM token embeddings (B, 77, 384), exactly as the engine encodes a
    one-chunk prompt (`limner.models.builtin.encode_captions`)."""

    def __init__(self) -> None:
        self.tokenizer, self.encoder = load_text_encoder(torch.float32)
        self.encoder.eval().requires_grad_(False)

    def __call__(self, captions: list[str]) -> torch.Tensor:
        return encode_captions(self.tokenizer, self.encoder, captions)[0]


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images (B, 3, 128, 128) in [-1, 1] -> scaled latents (B, 4, 16, 16)."""
    return sample_latents(vae, vae.encode(x).latent_dist.parameters, generator)


def sample_latents(
    vae: AutoencoderKL, posterior: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The VAE posterior's parameters (B, 2C, h, w) -> one scaled latent sample each."""
    z = DiagonalGaussianDistribution(posterior).sample(generator=generator).float()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (z - shift) * vae.config.scaling_factor


class EncoderCaches:
    """The trainer's frozen encoders, in front of the disk caches of `--cache`
    (`limner.training.encode_cache`): text states per scene for the captions, VAE
    posterior parameters per scene for the images."""

    def __init__(
        self, folder: Path, batches: SceneBatches, text: TextConditioner, vae, bf16: bool
    ) -> None:
        self.batches, self.text, self.vae = batches, text, vae
        ds = batches.dataset
        data = {"split": ds.split, "scenes_sha256": file_sha256(ds.root / f"{ds.split}.jsonl")}
        self.empty = text([""])[0]  # (T, D): what a dropped caption becomes
        self.text_cache = RowCache(
            folder,
            "text",
            len(ds),
            tuple(self.empty.shape),
            {**data, "encoder_sha256": module_sha256(text.encoder)},
        )
        self.posterior_dtype = torch.bfloat16 if bf16 else torch.float32
        height, width = batches.images([0])[0].shape[:2]
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        posterior_shape = (2 * vae.config.latent_channels, height // factor, width // factor)
        self.latent_cache = RowCache(
            folder,
            "posterior",
            len(ds),
            posterior_shape,
            {
                **data,
                "sprites_sha256": file_sha256(ds.root / "sprites.npz"),
                "vae_sha256": module_sha256(vae),
                "dtype": str(self.posterior_dtype),
            },
        )

    def _posteriors(self, rows: np.ndarray) -> torch.Tensor:
        # Called inside the training step's autocast, as the uncached path encodes.
        images = images_tensor(self.batches.images(rows))
        posterior = self.vae.encode(images).latent_dist.parameters
        if posterior.dtype != self.posterior_dtype:
            raise RuntimeError(f"the VAE made {posterior.dtype}, not {self.posterior_dtype}")
        return posterior

    def context(self, idx: np.ndarray, drop: np.ndarray) -> torch.Tensor:
        """What `TextConditioner` makes of the batch's captions, the dropped ones empty."""
        states = self.text_cache.get(idx, lambda rows: self.text(self.batches.captions(rows)))
        dropped = torch.from_numpy(drop).view(-1, 1, 1)
        return torch.where(dropped, self.empty, states)

    def latents(self, idx: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        posterior = self.latent_cache.get(idx, self._posteriors).to(self.posterior_dtype)
        return sample_latents(self.vae, posterior, generator)

    def save(self) -> None:
        self.text_cache.save()
        self.latent_cache.save()


def foreground_weights(
    boxes: list[list[tuple[int, int, int]]], side: int, cell: int, weight: float
) -> torch.Tensor:
    """Per-cell loss weights (B, 1, side, side): `weight` on the latent cells that any
    emoji box (x, y, size in pixels, `cell` pixels a cell) touches, 1 elsewhere, each
    image's weights scaled to average 1 so the loss keeps the plain MSE's scale."""
    if weight <= 0:
        raise InvalidRequestError(f"--foreground-weight must be > 0, not {weight}")
    w = torch.ones(len(boxes), 1, side, side)
    for k, items in enumerate(boxes):
        for x, y, size in items:
            x0, y0 = max(0, x // cell), max(0, y // cell)
            x1, y1 = min(side, -(-(x + size) // cell)), min(side, -(-(y + size) // cell))
            w[k, 0, y0:y1, x0:x1] = weight
    return w / w.mean(dim=(1, 2, 3), keepdim=True)


def diffusion_loss(
    unet: UNet2DConditionModel,
    latents: torch.Tensor,
    context: torch.Tensor,
    acp: torch.Tensor,
    generator: torch.Generator,
    snr_gamma: float,
    cell_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Epsilon-prediction MSE at uniform random timesteps, Min-SNR weighted; per latent
    cell by `cell_weights` (B, 1, H, W) when given."""
    b = latents.shape[0]
    t = torch.randint(0, acp.shape[0], (b,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    a = acp[t].view(b, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    pred = unet(noisy, t, context).sample.float()
    squared = (pred - noise).pow(2)
    if cell_weights is not None:
        squared = squared * cell_weights
    per_sample = squared.mean(dim=(1, 2, 3))
    if snr_gamma > 0:
        snr = acp[t] / (1 - acp[t])
        per_sample = per_sample * torch.clamp(snr, max=snr_gamma) / snr
    return per_sample.mean()


def noisy_context(
    context: torch.Tensor, std: float, captioned: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Text embeddings (B, T, D) with Gaussian noise of `std` added to the rows where
    `captioned` (B,) is true; the dropped captions' empty-prompt rows stay exact."""
    if std <= 0:
        return context
    noise = torch.randn(context.shape, generator=generator) * std
    return context + noise * captioned.view(-1, 1, 1).to(context.dtype)


def _lr_at(step: int, config: UnetTrainConfig) -> float:
    return learning_rate(
        step, config.lr, config.warmup, config.steps, config.lr_schedule, config.lr_floor
    )


def train(config: UnetTrainConfig, resume: bool = False) -> RunState:
    if not 0 <= config.caption_dropout < 1:
        raise InvalidRequestError("--caption-dropout must be in [0, 1)")
    if config.foreground_weight <= 0:
        raise InvalidRequestError(
            f"--foreground-weight must be > 0, not {config.foreground_weight}"
        )
    if config.context_noise < 0:
        raise InvalidRequestError(f"--context-noise must be >= 0, not {config.context_noise}")
    if config.grown_lr_scale <= 0:
        raise InvalidRequestError(f"--grown-lr-scale must be > 0, not {config.grown_lr_scale}")
    if config.grown_lr_scale != 1 and not (config.init and config.arch):
        raise InvalidRequestError("--grown-lr-scale needs --init and an --arch to grow into")
    _lr_at(1, config)  # a bad schedule or floor fails here, before any model loads
    torch.set_num_threads(max(1, config.threads))
    run_dir = Path(config.run_dir)
    batches = SceneBatches(config.data, "train", config.limit, config.single_fraction)
    vae = load_frozen_vae(config.vae)
    text = TextConditioner()
    scheduler_config = json.loads((builtin_dir() / "scheduler_config.json").read_text())
    acp = alphas_cumprod(scheduler_config)
    caches = None
    if config.cache:
        caches = EncoderCaches(Path(config.cache), batches, text, vae, uses_bf16(config.precision))
    unet, grown = build_unet(config.init, config.seed, config.arch)
    unet.train()
    # Attention as plain matmuls: at these sizes (256 queries, heads of 32) PyTorch's
    # fused CPU attention is several times slower, its backward above all (measured: a
    # whole training step 1.8x faster with the math path).
    unet.set_attn_processor(AttnProcessor())
    if config.grown_lr_scale != 1 and not grown:
        raise InvalidRequestError(f"--grown-lr-scale: {config.arch} adds nothing to {config.init}")
    named = list(unet.named_parameters())
    groups = [
        {"params": [p for n, p in named if n not in grown], "lr_scale": 1.0},
        {"params": [p for n, p in named if n in grown], "lr_scale": config.grown_lr_scale},
    ]
    # Fused: one kernel over all 24 M parameters took 16 ms a step against 60 ms for the
    # default multi-tensor path (session 25, 2 threads), about 4% of a step. A checkpoint
    # of an earlier run restores its own setting with its optimizer state.
    optimizer = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=config.lr, weight_decay=0.01, fused=True
    )
    ema = EMA(unet, config.ema_decay)
    state = start_run(
        run_dir, config, RESUME_KEYS, resume=resume, model=unet, optimizer=optimizer, ema=ema
    )

    progress = Progress(run_dir, state.step, config.steps, config.log_every, config.quiet)
    t_start, seconds0 = time.perf_counter(), state.seconds
    try:
        for step in range(state.step + 1, config.steps + 1):
            rng = step_rng(config.seed, step)
            idx = batches.indices(rng, config.batch_size)
            captions = batches.captions(idx)
            drop = rng.random(len(captions)) < config.caption_dropout
            captions = ["" if d else c for c, d in zip(captions, drop, strict=True)]
            g = torch.Generator().manual_seed(int(rng.integers(2**62)))
            for group in optimizer.param_groups:
                # Checkpoints from before grown parts restore groups without a scale.
                group["lr"] = _lr_at(step, config) * group.get("lr_scale", 1.0)
            # The frozen text encoder runs outside autocast: in fp32 it is as fast or
            # faster on CPUs (bf16 autocast measured 1.6x slower for it on a Xeon with
            # AVX512-BF16), and the embeddings then match the fp32 reference path's.
            clean = caches.context(idx, drop) if caches else text(captions)
            context = noisy_context(clean, config.context_noise, torch.from_numpy(~drop), g)
            cell_weights = None
            if config.foreground_weight != 1:
                cell_weights = foreground_weights(
                    batches.boxes(idx), side=16, cell=8, weight=config.foreground_weight
                )
            with autocast(config.precision):
                if caches:
                    latents = caches.latents(idx, g)
                else:
                    latents = encode_latents(vae, images_tensor(batches.images(idx)), g)
                loss = diffusion_loss(
                    unet, latents, context, acp, g, config.snr_gamma, cell_weights
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            ema.update(unet)
            state.step, state.images_seen = step, state.images_seen + len(idx)
            progress.update(step, len(idx), {"loss": float(loss.detach())})
            if step % config.checkpoint_every == 0 or step == config.steps:
                state.seconds = seconds0 + time.perf_counter() - t_start
                if caches:
                    caches.save()
                save_checkpoint(
                    run_dir, config=config, model=unet, optimizer=optimizer, state=state, ema=ema
                )
            if config.sample_every and (step % config.sample_every == 0 or step == config.steps):
                write_samples(
                    unet,
                    ema,
                    vae,
                    text,
                    scheduler_config,
                    run_dir / "samples" / f"step-{step:06d}.png",
                )
    finally:
        progress.close()
        if caches:
            caches.save()
    return state


def sampling_bundle(unet, vae, text: TextConditioner, scheduler_config: dict):
    """The engine's model bundle around these components (for sample grids)."""
    from limner.models.latent import Family
    from limner.models.loading import bundle_from_components

    components = {
        "unet": unet,
        "vae": vae,
        "text_encoder": text.encoder,
        "tokenizer": text.tokenizer,
        "scheduler": scheduler_config,
    }
    return bundle_from_components(components, name="training", family=Family.BUILTIN)


def write_samples(unet, ema: EMA, vae, text, scheduler_config: dict, path: Path) -> Path:
    """The EMA model's images for SAMPLE_PROMPTS through the engine (DPM++ 2M, 20 steps,
    guidance 5, seeds 0..), each with its prompt."""
    import numpy as np

    from limner import api
    from limner.runtime.device import RuntimeOptions

    averaged = copy.deepcopy(unet)
    ema.copy_to(averaged)
    model = sampling_bundle(averaged, vae, text, scheduler_config)
    images = []
    for k, prompt in enumerate(SAMPLE_PROMPTS):
        request = api.GenerationRequest(prompt=prompt, seed=k, steps=20, guidance_scale=5.0)
        # The text encoder is the trainer's own: never let the engine release it.
        runtime = RuntimeOptions(release_text_encoder=False)
        image = api.generate(request, model=model, runtime=runtime)[0].image
        images.append(np.array(image.convert("RGB")))
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, columns=4, captions=list(SAMPLE_PROMPTS)).save(path)
    return path


def export(run_dir: Path, out: Path) -> Path:
    """The run's EMA weights as an fp16 diffusers folder out/unet."""
    ckpt = load_checkpoint(run_dir)
    unet, _ = build_unet(ckpt["config"].get("init", ""), 0, ckpt["config"].get("arch", ""))
    unet.load_state_dict(ckpt["model"])
    if ckpt["ema"] is not None:
        ema = EMA(unet)
        ema.load_state_dict(ckpt["ema"])
        ema.copy_to(unet)
    target = Path(out) / "unet"
    unet.eval().to(torch.float16).save_pretrained(target, safe_serialization=True)
    return target
