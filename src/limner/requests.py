"""The generation request: one versioned object for every caller.

The same object goes into the PNG it produced, into job records, and is accepted back to
reproduce an image exactly. Bounds are checked here, where the values enter.
"""

from __future__ import annotations

import math
import secrets
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from limner.errors import InvalidRequestError

MAX_SEED = 2**32 - 1  # A1111 seeds are 32-bit
MAX_SIDE = 4096
MAX_PROMPT_CHARS = 20_000


class Mode(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"
    OUTPAINT = "outpaint"


class Outpaint(BaseModel):
    """Pixels to add on each side of the input image (multiples of 8)."""

    model_config = ConfigDict(extra="forbid")

    left: int = Field(0, ge=0, le=2048)
    right: int = Field(0, ge=0, le=2048)
    up: int = Field(0, ge=0, le=2048)
    down: int = Field(0, ge=0, le=2048)

    @field_validator("left", "right", "up", "down")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"must be a multiple of 8, got {value}")
        return value

    @model_validator(mode="after")
    def _some_side(self) -> Outpaint:
        if not (self.left or self.right or self.up or self.down):
            raise ValueError("outpainting needs at least one side to extend")
        return self


class GenerationRequest(BaseModel):
    """Everything that determines a set of images, given the model's weights."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    version: Literal[1] = 1
    mode: Mode = Mode.TXT2IMG
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)
    model: str | None = Field(None, description="path or registered name; None: the built-in model")
    sampler: str = "DPM++ 2M"
    schedule: str | None = Field(
        None, description="Automatic, Karras or Exponential; None: the sampler's default"
    )
    steps: int = Field(20, ge=1, le=500)
    guidance_scale: float = Field(7.0, ge=0.0, le=50.0)
    guidance_rescale: float = Field(0.0, ge=0.0, le=1.0)
    width: int | None = Field(None, description="pixels, a multiple of 8; None: the model's size")
    height: int | None = None
    seed: int | None = Field(None, ge=-1, le=MAX_SEED, description="-1 or None: random")
    batch_size: int = Field(1, ge=1, le=64)
    batch_count: int = Field(1, ge=1, le=1000)
    eta: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="noise multiplier of DDIM (default 0) and Euler a (default 1); "
        "None: the sampler's default",
    )
    clip_skip: int = Field(1, ge=1, le=12)
    # img2img, inpaint, outpaint
    init_image: str | None = Field(None, description="path of the input image")
    strength: float = Field(0.75, ge=0.0, le=1.0, description="denoising strength")
    # inpaint
    mask: str | None = Field(None, description="path of the mask: white is repainted")
    mask_blur: int = Field(4, ge=0, le=64)
    keep_unmasked: bool = Field(True, description="paste the original pixels back outside the mask")
    # outpaint
    outpaint: Outpaint | None = None
    # ranking, as DALL-E did: make `candidates` images, return the `keep` best by CLIP score
    candidates: int | None = Field(
        None, ge=2, le=256, description="images to make and rank with CLIP; None: no ranking"
    )
    keep: int = Field(1, ge=1, le=256, description="how many of the candidates to return")
    clip: str | None = Field(
        None, description="CLIP model folder (transformers format); None: limner's small CLIP"
    )

    @field_validator("width", "height")
    @classmethod
    def _size(cls, value: int | None) -> int | None:
        if value is None:
            return value
        if value % 8:
            raise ValueError(f"must be a multiple of 8, got {value}")
        if not 64 <= value <= MAX_SIDE:
            raise ValueError(f"must be between 64 and {MAX_SIDE}, got {value}")
        return value

    @field_validator("guidance_scale", "guidance_rescale", "strength", "eta")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _mode_inputs(self) -> GenerationRequest:
        needs_image = self.mode is not Mode.TXT2IMG
        if needs_image and not self.init_image:
            raise ValueError(f"{self.mode.value} needs an input image")
        if self.mode is Mode.INPAINT and not self.mask:
            raise ValueError("inpaint needs a mask")
        if self.mode is Mode.OUTPAINT and self.outpaint is None:
            raise ValueError("outpaint needs the sides to extend")
        self._check_ranking()
        return self

    def _check_ranking(self) -> None:
        if self.candidates is None:
            if self.keep != 1 or self.clip is not None:
                raise ValueError("keep and clip need candidates (the number of images to rank)")
            return
        if self.keep > self.candidates:
            raise ValueError(f"cannot keep {self.keep} of {self.candidates} candidates")
        if self.batch_count != 1:
            raise ValueError("with candidates, leave batch_count at 1 (candidates sets the count)")
        if self.candidates % self.batch_size:
            raise ValueError(
                f"candidates ({self.candidates}) must be a multiple of batch_size ({self.batch_size})"
            )

    @property
    def batch_runs(self) -> int:
        """Batches to run: batch_count, or as many as the candidates fill."""
        if self.candidates is None:
            return self.batch_count
        return self.candidates // self.batch_size

    def with_seed(self) -> GenerationRequest:
        """The same request with a concrete seed (a random one for None or -1)."""
        if self.seed is not None and self.seed >= 0:
            return self
        return self.model_copy(update={"seed": secrets.randbelow(MAX_SEED + 1)})

    @property
    def total_images(self) -> int:
        """Images generated (with candidates: all of them, before keeping the best)."""
        return self.batch_size * self.batch_runs


def parse_request(data: dict) -> GenerationRequest:
    """Validate a request from a dict, with one readable message for all problems."""
    try:
        return GenerationRequest.model_validate(data)
    except ValidationError as err:
        raise InvalidRequestError(describe_validation_error(err)) from None


def describe_validation_error(err: ValidationError) -> str:
    parts = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "request"
        message = problem["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "invalid request: " + "; ".join(parts)
