"""Original-layout tensors that have no counterpart in the diffusers components.

Real single-file checkpoints carry a few tensors the diffusers models do not own:

* the DDPM schedule buffers that ``LatentDiffusion.register_schedule`` stores in SD 1.x / 2.x
  checkpoints (CompVis/stable-diffusion ``ldm/models/diffusion/ddpm.py``): ``betas``,
  ``alphas_cumprod``, ``alphas_cumprod_prev``, ``sqrt_alphas_cumprod``,
  ``sqrt_one_minus_alphas_cumprod``, ``log_one_minus_alphas_cumprod``,
  ``sqrt_recip_alphas_cumprod``, ``sqrt_recipm1_alphas_cumprod``, ``posterior_variance``,
  ``posterior_log_variance_clipped``, ``posterior_mean_coef1``, ``posterior_mean_coef2``.
  They follow from the noise schedule alone (DDPM paper, Ho et al. 2020, eq. 6-7), so the
  exporter recomputes them from the scheduler config. SDXL (sgm) checkpoints have none.
* the CLIP ``embeddings.position_ids`` buffer (``arange(77)``, int64, shape ``[1, 77]``)
  that transformers < 4.31 saved with the model; SD 1.x and SDXL files contain it.
* the EMA bookkeeping scalars ``model_ema.decay`` / ``model_ema.num_updates`` of the LDM
  trainer's ``LitEma``, which the official SD 1.x releases kept after pruning the EMA weights.
  Their values are not derivable; the exporter writes inert placeholders (decay 0.9999, the
  ``LitEma`` default, and 0 updates) unless the caller passes the real ones.

Tensors that are *not* derivable from the diffusers components (OpenCLIP ``logit_scale``, the
SD 2.x text tower's unused ``text_projection`` and 24th resblock) are only written when they
are carried over from a loaded file (``SingleFileModel.extras``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .sd_keys import SD1_TEXT_PREFIX, SDXL_TEXT_PREFIX, Family

DDPM_BUFFER_NAMES: tuple[str, ...] = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)
EMA_BOOKKEEPING = ("model_ema.decay", "model_ema.num_updates")
POSITION_IDS_SUFFIX = "embeddings.position_ids"


def _betas(scheduler_config: Mapping) -> torch.Tensor | None:
    steps = int(scheduler_config.get("num_train_timesteps", 1000))
    trained = scheduler_config.get("trained_betas")
    if trained is not None:
        return torch.tensor(trained, dtype=torch.float64)
    start = float(scheduler_config.get("beta_start", 0.0001))
    end = float(scheduler_config.get("beta_end", 0.02))
    schedule = scheduler_config.get("beta_schedule", "linear")
    if schedule == "scaled_linear":  # LDM's "linear": linear in sqrt(beta)
        return torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2
    if schedule == "linear":
        return torch.linspace(start, end, steps, dtype=torch.float64)
    return None


def ddpm_schedule_buffers(scheduler_config: Mapping) -> dict[str, torch.Tensor]:
    """The 12 LDM schedule buffers (float32, computed in float64 like the original).

    Returns ``{}`` for a beta schedule the original code could not express.
    """
    betas = _betas(scheduler_config)
    if betas is None:
        return {}
    alphas = 1.0 - betas
    cumprod = torch.cumprod(alphas, dim=0)
    cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), cumprod[:-1]])
    posterior_variance = betas * (1.0 - cumprod_prev) / (1.0 - cumprod)
    values = {
        "betas": betas,
        "alphas_cumprod": cumprod,
        "alphas_cumprod_prev": cumprod_prev,
        "sqrt_alphas_cumprod": cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / cumprod - 1.0).sqrt(),
        "posterior_variance": posterior_variance,
        # The first posterior variance is 0; the original clips before the log.
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * cumprod_prev.sqrt() / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - cumprod_prev) * alphas.sqrt() / (1.0 - cumprod),
    }
    return {name: values[name].to(torch.float32) for name in DDPM_BUFFER_NAMES}


def position_ids(length: int) -> torch.Tensor:
    """The CLIP ``position_ids`` buffer as old transformers saved it: int64 ``[1, length]``."""
    return torch.arange(length, dtype=torch.int64).unsqueeze(0)


def derived_extras(
    family: Family,
    *,
    scheduler_config: Mapping,
    max_position_embeddings: int = 77,
    ema_bookkeeping: bool = True,
) -> dict[str, torch.Tensor]:
    """The non-component tensors an official checkpoint of ``family`` has, where derivable."""
    extras: dict[str, torch.Tensor] = {}
    if family == "sd1":
        extras[SD1_TEXT_PREFIX + POSITION_IDS_SUFFIX] = position_ids(max_position_embeddings)
    if family == "sdxl":
        extras[SDXL_TEXT_PREFIX + POSITION_IDS_SUFFIX] = position_ids(max_position_embeddings)
    if family in ("sd1", "sd2"):
        extras.update(ddpm_schedule_buffers(scheduler_config))
        if ema_bookkeeping:
            extras["model_ema.decay"] = torch.tensor(0.9999, dtype=torch.float32)
            extras["model_ema.num_updates"] = torch.tensor(0, dtype=torch.int32)
    return extras


def is_ema_weight(key: str) -> bool:
    """EMA copies of the UNet (``model_ema.diffusion_model...``), not the bookkeeping scalars."""
    return key.startswith("model_ema.") and key not in EMA_BOOKKEEPING
