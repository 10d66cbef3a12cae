"""Samplers under the names AUTOMATIC1111 users know, built on diffusers' schedulers.

A sampler is a diffusers scheduler class plus the config options that turn it into the
algorithm A1111 names (e.g. "DPM++ 2M" is DPMSolverMultistepScheduler with the
dpmsolver++ algorithm of order 2; Lu et al. 2022, arXiv:2211.01095). A schedule type
("Karras", Karras et al. 2022, arXiv:2206.00364 eq. 5; "Exponential") is a separate
choice, as in A1111 >= 1.9; the older combined names ("DPM++ 2M Karras") are accepted too.

We use diffusers' schedulers rather than our own copies: they are well kept, and using
them keeps our images equal to diffusers' own pipelines for the same seed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_euler_ancestral_discrete import (
    EulerAncestralDiscreteSchedulerOutput,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from limner.errors import InvalidRequestError


def ancestral_sigmas(sigma_from: float, sigma_to: float, eta: float) -> tuple[float, float]:
    """The deterministic and the noise part of an ancestral step from `sigma_from` to
    `sigma_to` (k-diffusion's get_ancestral_step): eta 1 is the full ancestral step, eta
    0 the plain Euler step, and the variance of the result stays sigma_to**2."""
    sigma_up = min(
        sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    )
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


class EulerAncestralEtaScheduler(EulerAncestralDiscreteScheduler):
    """Euler a with A1111's eta ("noise multiplier for ancestral samplers").

    diffusers' scheduler always takes the full ancestral step (eta 1); with eta None or
    1 this is that scheduler unchanged, so images stay equal to diffusers' own.
    """

    def step(self, model_output, timestep, sample, eta=None, generator=None, return_dict=True):
        if eta is None or eta == 1.0:
            return super().step(
                model_output, timestep, sample, generator=generator, return_dict=return_dict
            )
        if self.step_index is None:
            self._init_step_index(timestep)
        sigma_from = self.sigmas[self.step_index]
        sigma_to = self.sigmas[self.step_index + 1]
        x = sample.to(torch.float32)
        if self.config.prediction_type == "epsilon":
            denoised = x - sigma_from * model_output
        elif self.config.prediction_type == "v_prediction":
            denoised = model_output * (-sigma_from / (sigma_from**2 + 1) ** 0.5) + x / (
                sigma_from**2 + 1
            )
        else:
            raise InvalidRequestError(
                f"Euler a cannot sample a {self.config.prediction_type!r}-prediction model"
            )
        sigma_down, sigma_up = ancestral_sigmas(float(sigma_from), float(sigma_to), eta)
        x = x + (x - denoised) / sigma_from * (sigma_down - sigma_from)
        # Noise is drawn at every step whatever eta is, so that the random stream, and
        # with it the image, changes smoothly with eta.
        noise = randn_tensor(
            model_output.shape,
            dtype=model_output.dtype,
            device=model_output.device,
            generator=generator,
        )
        x = (x + noise * sigma_up).to(model_output.dtype)
        self._step_index += 1
        if not return_dict:
            return (x, denoised)
        return EulerAncestralDiscreteSchedulerOutput(prev_sample=x, pred_original_sample=denoised)


class ScheduleType(StrEnum):
    """How the noise levels of the steps are spaced."""

    AUTOMATIC = "Automatic"  # the model's own scheduler config
    KARRAS = "Karras"
    EXPONENTIAL = "Exponential"


_SCHEDULE_OPTION = {
    ScheduleType.KARRAS: "use_karras_sigmas",
    ScheduleType.EXPONENTIAL: "use_exponential_sigmas",
}


@dataclass(frozen=True)
class SamplerSpec:
    """One sampling algorithm: a scheduler class and the options that select it."""

    name: str
    scheduler_class: type[SchedulerMixin]
    options: dict[str, Any] = field(default_factory=dict)
    default_schedule: ScheduleType = ScheduleType.AUTOMATIC
    #: the noise multiplier the algorithm uses when none is asked for; None: it takes none
    eta: float | None = None
    description: str = ""

    def supports(self, schedule: ScheduleType) -> bool:
        if schedule is ScheduleType.AUTOMATIC:
            return True
        params = inspect.signature(self.scheduler_class.__init__).parameters
        return _SCHEDULE_OPTION[schedule] in params


SAMPLERS: dict[str, SamplerSpec] = {
    spec.name: spec
    for spec in [
        SamplerSpec(
            "Euler a",
            EulerAncestralEtaScheduler,
            {},
            eta=1.0,
            description="ancestral Euler (stochastic); eta scales the noise it adds",
        ),
        SamplerSpec(
            "Euler",
            EulerDiscreteScheduler,
            {},
            description="Euler, Karras et al. 2022 Alg. 2 without churn",
        ),
        SamplerSpec(
            "Heun",
            HeunDiscreteScheduler,
            {},
            description="Heun's 2nd order, Karras et al. 2022 Alg. 1",
        ),
        SamplerSpec("LMS", LMSDiscreteScheduler, {}, description="linear multistep, order 4"),
        SamplerSpec(
            "DPM2", KDPM2DiscreteScheduler, {}, description="DPM-Solver-2 in k-diffusion form"
        ),
        SamplerSpec(
            "DPM2 a", KDPM2AncestralDiscreteScheduler, {}, description="ancestral DPM2 (stochastic)"
        ),
        SamplerSpec(
            "DPM++ 2M",
            DPMSolverMultistepScheduler,
            {"algorithm_type": "dpmsolver++", "solver_order": 2},
            default_schedule=ScheduleType.KARRAS,
            description="DPM-Solver++(2M), Lu et al. 2022",
        ),
        SamplerSpec(
            "DPM++ 2M SDE",
            DPMSolverMultistepScheduler,
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
            default_schedule=ScheduleType.KARRAS,
            description="DPM-Solver++(2M) SDE (stochastic)",
        ),
        SamplerSpec(
            "DPM++ SDE",
            DPMSolverSDEScheduler,
            {},
            default_schedule=ScheduleType.KARRAS,
            description="DPM-Solver++ SDE with Brownian-tree noise (stochastic)",
        ),
        SamplerSpec(
            "DDIM",
            DDIMScheduler,
            {},
            eta=0.0,
            description="DDIM, Song et al. 2020; eta > 0 adds noise",
        ),
        SamplerSpec(
            "PLMS", PNDMScheduler, {"skip_prk_steps": True}, description="pseudo linear multistep"
        ),
        SamplerSpec("UniPC", UniPCMultistepScheduler, {}, description="UniPC, Zhao et al. 2023"),
        SamplerSpec(
            "LCM", LCMScheduler, {}, description="latent consistency sampling, for LCM models"
        ),
    ]
}

# Names as A1111 printed them before it split the schedule type out (and still accepts).
_COMBINED_NAMES = {
    f"{name} {schedule.value}": (name, schedule)
    for name, spec in SAMPLERS.items()
    for schedule in (ScheduleType.KARRAS, ScheduleType.EXPONENTIAL)
    if spec.supports(schedule)
}


@dataclass(frozen=True)
class ResolvedSampler:
    spec: SamplerSpec
    schedule: ScheduleType

    @property
    def label(self) -> str:
        """The name A1111's older versions print, e.g. "DPM++ 2M Karras"."""
        if self.schedule is ScheduleType.AUTOMATIC:
            return self.spec.name
        return f"{self.spec.name} {self.schedule.value}"


def sampler_names() -> list[str]:
    """Every accepted sampler name: the base names and the combined "NAME Schedule" ones."""
    return list(SAMPLERS) + list(_COMBINED_NAMES)


def _lookup(table: dict[str, Any], name: str) -> Any:
    folded = {key.casefold(): value for key, value in table.items()}
    return folded.get(name.strip().casefold())


def resolve_sampler(name: str, schedule: str | None = None) -> ResolvedSampler:
    """Find a sampler by its A1111 name (case-insensitive), with an optional schedule type.

    `schedule=None` means the sampler's own default, as A1111's "Automatic" does:
    DPM++ samplers default to Karras spacing there.
    """
    combined = _lookup(_COMBINED_NAMES, name)
    if combined is not None:
        base, implied = combined
        spec = SAMPLERS[base]
        if schedule is not None and _parse_schedule(schedule) not in (
            implied,
            ScheduleType.AUTOMATIC,
        ):
            raise InvalidRequestError(
                f"sampler {name!r} already names the {implied.value} schedule; "
                f"conflicting schedule type {schedule!r}"
            )
        return ResolvedSampler(spec, implied)
    spec = _lookup(SAMPLERS, name)
    if spec is None:
        raise InvalidRequestError(
            f"unknown sampler {name!r}; known samplers: {', '.join(sampler_names())}"
        )
    chosen = spec.default_schedule if schedule is None else _parse_schedule(schedule)
    if chosen is ScheduleType.AUTOMATIC:
        chosen = spec.default_schedule
    if not spec.supports(chosen):
        raise InvalidRequestError(
            f"sampler {spec.name!r} does not support the {chosen.value} schedule"
        )
    return ResolvedSampler(spec, chosen)


def _parse_schedule(schedule: str) -> ScheduleType:
    for member in ScheduleType:
        if schedule.strip().casefold() == member.value.casefold():
            return member
    known = ", ".join(member.value for member in ScheduleType)
    raise InvalidRequestError(f"unknown schedule type {schedule!r}; known: {known}")


def make_scheduler(sampler: ResolvedSampler, model_scheduler_config: dict) -> SchedulerMixin:
    """A fresh scheduler for one generation, from the model's own scheduler config.

    The model's config carries the training noise schedule (betas, prediction type,
    timestep spacing); the sampler only chooses the algorithm on top of it.
    """
    options = dict(sampler.spec.options)
    if sampler.schedule is not ScheduleType.AUTOMATIC:
        options[_SCHEDULE_OPTION[sampler.schedule]] = True
    config = {k: v for k, v in model_scheduler_config.items() if not k.startswith("_")}
    # A model config written for another scheduler may carry options this one lacks, or
    # set another algorithm's schedule flags; only the sampler's own choices count.
    for flag in _SCHEDULE_OPTION.values():
        config.pop(flag, None)
    return sampler.spec.scheduler_class.from_config({**config, **options})


def step_kwargs(scheduler: SchedulerMixin, *, eta: float | None, generator: Any) -> dict[str, Any]:
    """Keyword arguments for `scheduler.step`: eta (None: the sampler's default) and
    generator where the algorithm takes them."""
    params = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in params and eta is not None:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs
