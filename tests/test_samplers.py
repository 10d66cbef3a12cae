"""The sampler registry: A1111 names resolve to the right diffusers algorithm."""

from __future__ import annotations

import pytest
from diffusers import (
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
)

from limner.diffusion.samplers import (
    SAMPLERS,
    ScheduleType,
    ancestral_sigmas,
    make_scheduler,
    resolve_sampler,
    sampler_names,
)
from limner.errors import InvalidRequestError
from tiny_models import SCHEDULER_CONFIG

REQUIRED = [
    "Euler a",
    "Euler",
    "Heun",
    "LMS",
    "DDIM",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ SDE Karras",
    "UniPC",
    "LCM",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_required_names_resolve(name):
    assert name in sampler_names()
    resolved = resolve_sampler(name)
    assert resolved.spec.name in SAMPLERS


def test_combined_name_sets_the_schedule():
    resolved = resolve_sampler("DPM++ 2M Karras")
    assert resolved.spec.name == "DPM++ 2M" and resolved.schedule is ScheduleType.KARRAS
    scheduler = make_scheduler(resolved, SCHEDULER_CONFIG)
    assert isinstance(scheduler, DPMSolverMultistepScheduler)
    assert scheduler.config.use_karras_sigmas and scheduler.config.algorithm_type == "dpmsolver++"


def test_names_are_case_insensitive_and_schedule_is_separate():
    resolved = resolve_sampler("euler A", "automatic")
    assert issubclass(resolved.spec.scheduler_class, EulerAncestralDiscreteScheduler)
    assert resolved.schedule is ScheduleType.AUTOMATIC
    assert not make_scheduler(resolved, SCHEDULER_CONFIG).config.get("use_karras_sigmas", False)


def test_sde_karras_uses_the_brownian_tree_sampler():
    scheduler = make_scheduler(resolve_sampler("DPM++ SDE Karras"), SCHEDULER_CONFIG)
    assert isinstance(scheduler, DPMSolverSDEScheduler) and scheduler.config.use_karras_sigmas


def test_model_schedule_flags_do_not_leak_into_the_sampler():
    config = {**SCHEDULER_CONFIG, "use_karras_sigmas": True}
    scheduler = make_scheduler(resolve_sampler("Euler"), config)
    assert not scheduler.config.use_karras_sigmas
    assert scheduler.config.prediction_type == "epsilon"


def test_unknown_sampler_lists_the_known_ones():
    with pytest.raises(InvalidRequestError) as err:
        resolve_sampler("Euler b")
    assert "Euler b" in str(err.value) and "DPM++ 2M Karras" in str(err.value)


def test_conflicting_schedule_is_refused():
    with pytest.raises(InvalidRequestError, match="conflicting"):
        resolve_sampler("DPM++ 2M Karras", "Exponential")


def test_unknown_schedule_type_is_refused():
    with pytest.raises(InvalidRequestError, match="unknown schedule type"):
        resolve_sampler("Euler", "Cosine")


def test_v_prediction_comes_from_the_model_config():
    config = {**SCHEDULER_CONFIG, "prediction_type": "v_prediction"}
    assert make_scheduler(resolve_sampler("UniPC"), config).config.prediction_type == "v_prediction"


def test_samplers_that_declare_an_eta_are_those_whose_step_takes_one():
    """A request's eta is refused for samplers that declare none, so the declaration must
    match what the scheduler's step really accepts."""
    import inspect

    for name, spec in SAMPLERS.items():
        takes = "eta" in inspect.signature(spec.scheduler_class.step).parameters
        assert takes == (spec.eta is not None), name


@pytest.mark.parametrize("sigma_from,sigma_to", [(14.6, 9.7), (1.2, 0.6), (0.3, 0.0)])
def test_ancestral_step_keeps_the_variance_and_reduces_to_euler(sigma_from, sigma_to):
    down, up = ancestral_sigmas(sigma_from, sigma_to, 1.0)
    assert down**2 + up**2 == pytest.approx(sigma_to**2)
    # k-diffusion's full ancestral step, which diffusers' Euler a takes
    expected_up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    assert up == pytest.approx(expected_up)
    assert ancestral_sigmas(sigma_from, sigma_to, 0.0) == (pytest.approx(sigma_to), 0.0)
    half_down, half_up = ancestral_sigmas(sigma_from, sigma_to, 0.5)
    assert half_up == pytest.approx(up / 2)
    assert half_down**2 + half_up**2 == pytest.approx(sigma_to**2)
