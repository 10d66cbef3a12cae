"""The VAE training loop and its export (see `limner.training.vae`)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from limner.errors import InvalidRequestError
from limner.models.builtin import builtin_dir
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
    to_uint8,
)
from limner.training.data import SceneBatches
from limner.training.preview_map import write_preview_map
from limner.training.vae import RESUME_KEYS, VaeTrainConfig

SAMPLE_COUNT = 8
LOGVAR_INIT_OFFSET = 4.0


def build_vae(init: str = "", seed: int = 0, arch: str = "") -> AutoencoderKL:
    """The built-in VAE architecture, freshly initialised (seeded) or from weights."""
    if init:
        folder = builtin_dir() / "vae" if init == "builtin" else Path(init)
        if not (folder / "config.json").is_file():
            raise InvalidRequestError(f"--init {init}: no diffusers VAE folder at {folder}")
        return AutoencoderKL.from_pretrained(
            folder, local_files_only=True, torch_dtype=torch.float32
        )
    torch.manual_seed(seed)
    vae = AutoencoderKL.from_config(architecture(arch, "vae_config.json"))
    # Start with a small posterior std (log-variance bias -4: std 0.14, not 1): at the
    # default init the sampled latents are mostly noise, and with the tiny KL weight the
    # decoder spends hundreds of steps learning to ignore them before colours come out.
    if vae.quant_conv is not None:
        with torch.no_grad():
            vae.quant_conv.bias[vae.config.latent_channels :] -= LOGVAR_INIT_OFFSET
    return vae


def freeze_encoder(vae: AutoencoderKL) -> None:
    """Fix everything up to the latent distribution (encoder and quant_conv)."""
    vae.encoder.requires_grad_(False)
    if vae.quant_conv is not None:
        vae.quant_conv.requires_grad_(False)


def random_crops(images: list[np.ndarray], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    if size % 8 or size < 8:
        raise InvalidRequestError(f"--crop must be a positive multiple of 8, not {size}")
    out = []
    for img in images:
        h, w = img.shape[:2]
        if size >= min(h, w):
            out.append(img)
            continue
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        out.append(img[y : y + size, x : x + size])
    return out


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, kl_weight: float, generator: torch.Generator):
    """L1 reconstruction of a posterior sample + kl_weight * KL(q(z|x) || N(0, I))."""
    posterior = vae.encode(x).latent_dist
    z = posterior.sample(generator=generator)
    recon = vae.decode(z).sample.float()
    l1 = (recon - x).abs().mean()
    kl = posterior.kl().mean() / x[0].numel()  # per pixel, as the L1 term
    return l1 + kl_weight * kl, {"l1": float(l1.detach()), "kl": float(kl.detach())}


def _lr_at(step: int, config: VaeTrainConfig) -> float:
    return learning_rate(
        step, config.lr, config.warmup, config.steps, config.lr_schedule, config.lr_floor
    )


def train(config: VaeTrainConfig, resume: bool = False) -> RunState:
    _lr_at(1, config)  # a bad schedule or floor fails here, before any model loads
    torch.set_num_threads(max(1, config.threads))
    run_dir = Path(config.run_dir)
    batches = SceneBatches(config.data, "train", config.limit)
    if config.decoder_only and not config.init:
        raise InvalidRequestError("--decoder-only needs --init (the VAE whose encoder stays)")
    vae = build_vae(config.init, config.seed, config.arch)
    vae.train()
    if config.decoder_only:
        freeze_encoder(vae)
    trained = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=0.0)
    ema = EMA(vae, config.ema_decay)
    state = start_run(
        run_dir, config, RESUME_KEYS, resume=resume, model=vae, optimizer=optimizer, ema=ema
    )
    samples = (
        SceneBatches(config.data, "heldout") if _has_split(config.data, "heldout") else batches
    )
    sample_images = samples.images(range(min(SAMPLE_COUNT, samples.size)))

    progress = Progress(run_dir, state.step, config.steps, config.log_every, config.quiet)
    t_start = time.perf_counter()
    seconds0 = state.seconds
    try:
        for step in range(state.step + 1, config.steps + 1):
            rng = step_rng(config.seed, step)
            idx = batches.indices(rng, config.batch_size)
            x = images_tensor(random_crops(batches.images(idx), config.crop, rng))
            g = torch.Generator().manual_seed(int(rng.integers(2**62)))
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, config)
            with autocast(config.precision):
                loss, parts = vae_loss(vae, x, config.kl_weight, g)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            ema.update(vae)
            state.step, state.images_seen = step, state.images_seen + len(idx)
            progress.update(step, len(idx), {"loss": float(loss.detach()), **parts})
            if step % config.checkpoint_every == 0 or step == config.steps:
                state.seconds = seconds0 + time.perf_counter() - t_start
                save_checkpoint(
                    run_dir, config=config, model=vae, optimizer=optimizer, state=state, ema=ema
                )
            if config.sample_every and (step % config.sample_every == 0 or step == config.steps):
                write_samples(vae, ema, sample_images, run_dir / "samples" / f"step-{step:06d}.png")
    finally:
        progress.close()
    return state


def _has_split(data: str, split: str) -> bool:
    path = Path(data) / f"{split}.jsonl"
    return path.is_file() and path.stat().st_size > 0


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: list[np.ndarray]) -> np.ndarray:
    x = images_tensor(images)
    return to_uint8(vae.decode(vae.encode(x).latent_dist.mode()).sample)


def write_samples(vae: AutoencoderKL, ema: EMA, images: list[np.ndarray], path: Path) -> Path:
    """Originals (top row) and their EMA reconstructions (bottom row)."""
    import copy

    averaged = copy.deepcopy(vae).eval()
    ema.copy_to(averaged)
    recon = reconstruct(averaged, images)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid([*images, *recon], columns=len(images)).save(path)
    return path


@torch.no_grad()
def latent_statistics(
    vae: AutoencoderKL, data: str, count: int = 512, seed: int = 0
) -> tuple[float, float]:
    """Mean and std of the posterior means over `count` training scenes: the shift and
    1/scale that give the diffusion model unit-variance latents (as SD's 0.18215)."""
    batches = SceneBatches(data, "train")
    idx = batches.indices(np.random.default_rng(seed), count)
    zs = []
    for start in range(0, count, 64):
        x = images_tensor(batches.images(idx[start : start + 64]))
        zs.append(vae.encode(x).latent_dist.mean)
    z = torch.cat(zs)
    return float(z.mean()), float(z.std())


def export(run_dir: Path, out: Path, *, data: str) -> Path:
    """The run's EMA weights as an fp16 diffusers folder out/vae, with the latent shift
    and scaling factor measured on the data written into its config."""
    ckpt = load_checkpoint(run_dir)
    vae = build_vae(ckpt["config"].get("init", ""), 0, ckpt["config"].get("arch", ""))
    vae.load_state_dict(ckpt["model"])
    if ckpt["ema"] is not None:
        ema = EMA(vae)
        ema.load_state_dict(ckpt["ema"])
        ema.copy_to(vae)
    vae.eval()
    if not ckpt["config"].get("decoder_only"):
        # (A decoder-only run keeps its --init's latent space, so its shift and scale.)
        mean, std = latent_statistics(vae, data)
        vae.register_to_config(shift_factor=round(mean, 5), scaling_factor=round(1.0 / std, 5))
    target = Path(out) / "vae"
    vae.to(torch.float16).save_pretrained(target, safe_serialization=True)
    # Live previews need a latent-to-RGB map of this latent space (fitted in seconds).
    write_preview_map(target, data)
    return target
