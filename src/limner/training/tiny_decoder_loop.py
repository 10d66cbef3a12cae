"""The tiny-decoder distillation loop and its export (see `limner.training.tiny_decoder`)."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from limner.errors import InvalidRequestError
from limner.runtime.tiny_decoder import (
    TinyDecoder,
    config_for_vae,
    distillation_loss,
    load_tiny_decoder,
    save_tiny_decoder,
)
from limner.training.common import (
    EMA,
    Progress,
    RunState,
    autocast,
    image_grid,
    images_tensor,
    load_checkpoint,
    save_checkpoint,
    start_run,
    step_rng,
    to_uint8,
)
from limner.training.tiny_decoder import RESUME_KEYS, TinyDecoderTrainConfig, image_source
from limner.training.unet_loop import encode_latents, load_frozen_vae
from limner.training.vae_loop import random_crops

SAMPLE_COUNT = 4


def build_student(vae, init: str = "", seed: int = 0) -> TinyDecoder:
    """A fresh TAESD decoder shaped for `vae` (seeded), or the one in file `init`."""
    if init:
        student = load_tiny_decoder(init).float().requires_grad_(True)
        expected = config_for_vae(vae)
        if student.config != expected:
            raise InvalidRequestError(
                f"--init {init}: a decoder for {student.config.latent_channels} latent "
                f"channels and {2**student.config.upsamples}x, the VAE needs "
                f"{expected.latent_channels} and {2**expected.upsamples}x"
            )
        return student
    torch.manual_seed(seed)
    return config_for_vae(vae).build()


def train(config: TinyDecoderTrainConfig, resume: bool = False) -> RunState:
    if config.crop % 8 or config.crop < 8:
        raise InvalidRequestError(f"--crop must be a positive multiple of 8, not {config.crop}")
    torch.set_num_threads(max(1, config.threads))
    run_dir = Path(config.run_dir)
    source = image_source(config.data, config.limit, config.crop)
    vae = load_frozen_vae(config.vae)
    student = build_student(vae, config.init, config.seed)
    student.train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=0.0)
    ema = EMA(student, config.ema_decay)
    state = start_run(
        run_dir, config, RESUME_KEYS, resume=resume, model=student, optimizer=optimizer, ema=ema
    )
    sample_rng = np.random.default_rng([config.seed, 0, 1])
    sample_images = random_crops(
        source.images(range(min(SAMPLE_COUNT, source.size))), config.crop, sample_rng
    )

    progress = Progress(run_dir, state.step, config.steps, config.log_every, config.quiet)
    t_start, seconds0 = time.perf_counter(), state.seconds
    try:
        for step in range(state.step + 1, config.steps + 1):
            rng = step_rng(config.seed, step)
            idx = source.indices(rng, config.batch_size)
            crops = random_crops(source.images(idx), config.crop, rng)
            if len({c.shape for c in crops}) > 1:  # images smaller than the crop
                side = min(min(c.shape[:2]) for c in crops) // 8 * 8
                crops = [c[:side, :side] for c in crops]
            g = torch.Generator().manual_seed(int(rng.integers(2**62)))
            with torch.no_grad():
                latents = encode_latents(vae, images_tensor(crops), g)
            with autocast(config.precision):
                loss = distillation_loss(vae, student, latents)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            ema.update(student)
            state.step, state.images_seen = step, state.images_seen + len(idx)
            progress.update(step, len(idx), {"loss": float(loss.detach())})
            if step % config.checkpoint_every == 0 or step == config.steps:
                state.seconds = seconds0 + time.perf_counter() - t_start
                save_checkpoint(
                    run_dir, config=config, model=student, optimizer=optimizer, state=state, ema=ema
                )
            if config.sample_every and (step % config.sample_every == 0 or step == config.steps):
                write_samples(
                    vae, student, ema, sample_images, run_dir / "samples" / f"step-{step:06d}.png"
                )
    finally:
        progress.close()
    return state


@torch.no_grad()
def write_samples(vae, student: TinyDecoder, ema: EMA, images, path: Path) -> Path:
    """Originals (top row), the VAE's decodes (middle), the EMA student's (bottom)."""
    averaged = copy.deepcopy(student).eval()
    ema.copy_to(averaged)
    latents = encode_latents(vae, images_tensor(images), torch.Generator().manual_seed(0))
    scale = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    teacher = to_uint8(vae.decode(latents / scale + shift).sample)
    pupil = to_uint8(averaged(latents))
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [*images, *teacher, *pupil]
    image_grid(rows, columns=len(images)).save(path)
    return path


def export(run_dir: Path, out: Path) -> Path:
    """The run's EMA weights as a TAESD-format decoder file."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise InvalidRequestError(f"--export {out}: name a .safetensors file")
    ckpt = load_checkpoint(run_dir)
    config = ckpt["config"]
    vae = load_frozen_vae(config.get("vae", "builtin"))
    student = build_student(vae)
    student.load_state_dict(ckpt["model"])
    if ckpt["ema"] is not None:
        ema = EMA(student)
        ema.load_state_dict(ckpt["ema"])
        ema.copy_to(student)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_tiny_decoder(student.eval(), out)
