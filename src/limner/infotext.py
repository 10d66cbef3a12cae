"""Generation parameters as text, in the exact form AUTOMATIC1111's web UI writes them.

A1111 (stable-diffusion-webui, v1.10) stores an "infotext" in the PNG ``parameters``
chunk and shows it under every image. Its shape, built by ``create_infotext`` in
``modules/processing.py``::

    <prompt, may span several lines>
    Negative prompt: <negative prompt, may span several lines>
    Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1234, ...

* the ``Negative prompt:`` line is left out when the negative prompt is empty;
* the last line is ``", ".join(f"{key}: {quote(value)}")`` over the parameters in
  insertion order, skipping ``None`` values (a value equal to its key is written as the
  bare key);
* ``quote`` (``modules/infotext_utils.py``) JSON-encodes (``ensure_ascii=False``) a
  value holding ``,`` ``:`` or a newline, so the line stays splittable on commas;
* the whole text is ``.strip()``-ed.

Reading it back follows ``parse_generation_parameters`` (``modules/infotext_utils.py``):
the last line is the parameter line only when the parameter pattern matches it at
least 3 times; every earlier line belongs to the prompt until a line starting with
``Negative prompt:``, after which all lines belong to the negative prompt.

Numbers are written the way A1111's UI produces them: Gradio hands whole slider values
over as ints, so real infotexts say ``CFG scale: 7`` and ``Denoising strength: 0.75``;
we therefore write integral floats without ``.0`` and other floats with Python's
shortest round-trip ``repr``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from limner.errors import InvalidRequestError

__all__ = ["A1111_KEY_ORDER", "a1111_params", "format_infotext", "parse_infotext"]

#: The keys ``create_infotext`` (A1111 v1.10) writes, in its order. Extension and
#: img2img extras (``Mask blur``, ``Hires upscale``, ``Lora hashes``, ``Eta``, ...) come
#: from ``p.extra_generation_params`` and sit between ``Tiling`` and ``Version``.
A1111_KEY_ORDER: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "FP8 weight",
    "Cache FP16 weight for LoRA",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Token merging ratio hr",
    "Init image hash",
    "RNG",
    "Tiling",
    # ... p.extra_generation_params ...
    "Version",
    "User",
)

NEGATIVE_PREFIX = "Negative prompt:"

# A1111's `re_param_code`: a key is a word character followed by at least one word
# character, space, hyphen or slash; a value is a JSON string or anything up to a comma.
_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_KEY_RE = re.compile(r"\w[\w \-/]+")
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
# A1111 quotes on `,` `:` and newline. We also quote a value holding `"`: unquoted,
# a value such as `"x"` would be read back (by A1111 too) as `x`; quoted, both
# readers return it intact.
_NEEDS_QUOTING = (",", ":", "\n", '"')
# parse_generation_parameters treats a last line as parameters only from 3 matches on.
_MIN_PARAMS_IN_LAST_LINE = 3


def format_value(value: object) -> str:
    """A parameter value as A1111 prints it (before quoting).

    ``bool`` -> ``True``/``False`` (``str``); whole floats -> ``7`` as the UI writes
    them; other floats -> shortest repr (``0.75``); everything else -> ``str``.
    """
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def quote(text: str) -> str:
    """JSON-quote `text` when it would break the comma-separated line (A1111 ``quote``)."""
    if any(ch in text for ch in _NEEDS_QUOTING):
        return json.dumps(text, ensure_ascii=False)
    return text


def unquote(text: str) -> str:
    """Undo `quote`; a value that is not valid JSON is kept as written (A1111 ``unquote``)."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        decoded = json.loads(text)
    except ValueError:
        return text
    return decoded if isinstance(decoded, str) else text


def _check_key(key: str) -> None:
    # A key the parser cannot match would silently vanish on the way back.
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise InvalidRequestError(
            f"infotext key {key!r} cannot be read back: use letters, digits, "
            "spaces, '-', '_' or '/' (at least 2 characters)"
        )


def format_params_line(params: Mapping[str, object]) -> str:
    """The last infotext line: ``Key: value, ...`` in the order of `params`, ``None`` dropped."""
    parts: list[str] = []
    for key, value in params.items():
        if value is None:
            continue
        _check_key(key)
        text = format_value(value)
        # create_infotext writes a value equal to its key as the bare key.
        parts.append(key if text == key else f"{key}: {quote(text)}")
    return ", ".join(parts)


def format_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """The A1111 ``parameters`` text for one image.

    ``prompt`` (any number of lines), then ``Negative prompt: ...`` unless
    `negative_prompt` is empty, then the parameter line built from `params` in the
    caller's order. A1111's order (`A1111_KEY_ORDER`, which `a1111_params` follows):
    Steps, Sampler, Schedule type, CFG scale, Image CFG scale, Seed, Face restoration,
    Size, Model hash, Model, FP8 weight, Cache FP16 weight for LoRA, VAE hash, VAE,
    Variation seed, Variation seed strength, Seed resize from, Denoising strength,
    Conditional mask weight, Clip skip, ENSD, Token merging ratio, Token merging ratio
    hr, Init image hash, RNG, Tiling, then the extras (Mask blur, Hires ..., Lora
    hashes, Eta, ...), then Version, User.
    Like ``create_infotext``, the result is stripped of surrounding whitespace.
    Raises `InvalidRequestError` for a key A1111's parser could not read back.
    """
    negative = f"\n{NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{format_params_line(params)}".strip()


def _size(value: tuple[int, int]) -> str:
    width, height = value
    return f"{int(width)}x{int(height)}"


def a1111_params(
    *,
    steps: int,
    sampler: str,
    cfg_scale: float,
    seed: int,
    size: tuple[int, int],
    schedule_type: str | None = "Automatic",
    image_cfg_scale: float | None = None,
    face_restoration: str | None = None,
    model_hash: str | None = None,
    model: str | None = None,
    vae_hash: str | None = None,
    vae: str | None = None,
    variation_seed: int | None = None,
    variation_seed_strength: float | None = None,
    seed_resize_from: tuple[int, int] | None = None,
    denoising_strength: float | None = None,
    conditional_mask_weight: float | None = None,
    clip_skip: int | None = None,
    ensd: int | None = None,
    token_merging_ratio: float | None = None,
    init_image_hash: str | None = None,
    rng: str | None = None,
    tiling: bool = False,
    mask_blur: int | None = None,
    extra: Mapping[str, object] | None = None,
    eta: float | None = None,
    eta_ddim: float | None = None,
    version: str | None = None,
    user: str | None = None,
) -> dict[str, object]:
    """Generation parameters keyed and ordered as A1111's ``create_infotext`` writes them.

    Omission rules follow A1111: ``Variation seed``/``Variation seed strength`` only when
    the strength is non-zero; ``Seed resize from`` only when both sides are > 0;
    ``Clip skip`` only when > 1; ``ENSD`` only when non-zero; ``Token merging ratio``
    only when non-zero; ``RNG`` only when not ``GPU``; ``Tiling: True`` only when tiling.

    ``size`` and ``seed_resize_from`` are ``(width, height)``. ``denoising_strength`` is
    for img2img (and hires fix); ``mask_blur`` is for inpainting (img2img writes it
    from ``extra_generation_params``, so it comes after ``Tiling``, here just before
    `extra`). `extra` holds further ``extra_generation_params`` entries (``Hires
    upscale``, ``Lora hashes``, ...) in the order they were set; as in A1111 an extra
    named like a fixed key replaces that key's value in place. ``Eta`` (k-diffusion ancestral samplers, default 1.0) and
    ``Eta DDIM`` (default 0.0) are written only when they differ from those defaults,
    as A1111's samplers add them last, while sampling.
    """
    params: dict[str, object] = {
        "Steps": steps,
        "Sampler": sampler,
        "Schedule type": schedule_type,
        "CFG scale": cfg_scale,
        "Image CFG scale": image_cfg_scale,
        "Seed": seed,
        "Face restoration": face_restoration,
        "Size": _size(size),
        "Model hash": model_hash,
        "Model": model,
        "VAE hash": vae_hash,
        "VAE": vae,
    }
    with_variation = bool(variation_seed_strength) and variation_seed is not None
    params["Variation seed"] = variation_seed if with_variation else None
    params["Variation seed strength"] = variation_seed_strength if with_variation else None
    resize_ok = seed_resize_from is not None and min(seed_resize_from) > 0
    params["Seed resize from"] = _size(seed_resize_from) if resize_ok else None
    params["Denoising strength"] = denoising_strength
    params["Conditional mask weight"] = conditional_mask_weight
    params["Clip skip"] = clip_skip if clip_skip is not None and clip_skip > 1 else None
    params["ENSD"] = ensd or None
    params["Token merging ratio"] = token_merging_ratio or None
    params["Init image hash"] = init_image_hash
    params["RNG"] = rng if rng not in (None, "GPU") else None
    params["Tiling"] = "True" if tiling else None
    params["Mask blur"] = mask_blur
    # `**p.extra_generation_params` in create_infotext: an extra named like a fixed key
    # replaces its value but keeps its place (v1.10 sets "Denoising strength" that way).
    params.update(extra or {})
    if eta is not None and eta != 1.0:
        params["Eta"] = eta
    if eta_ddim:
        params["Eta DDIM"] = eta_ddim
    params["Version"] = version
    params["User"] = user
    return {key: value for key, value in params.items() if value is not None}


def parse_params_line(line: str) -> dict[str, str]:
    """``Key: value, ...`` -> dict, quoted values unquoted.

    As in A1111, a ``WxH`` value also yields ``<Key>-1`` (width) and ``<Key>-2``
    (height); unlike A1111 the ``<Key>`` entry itself is kept too.
    """
    result: dict[str, str] = {}
    for key, raw in _PARAM_RE.findall(line):
        value = unquote(raw) if raw.startswith('"') and raw.endswith('"') else raw
        result[key] = value
        size = _SIZE_RE.match(value)
        if size is not None:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
    return result


def _split_prompts(lines: list[str]) -> tuple[str, str]:
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for raw in lines:
        line = raw.strip()
        if line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX) :].strip()
        (negative if in_negative else prompt).append(line)
    return "\n".join(prompt), "\n".join(negative)


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Split A1111 infotext into ``(prompt, negative_prompt, params)``.

    Mirrors ``parse_generation_parameters``: lines are stripped, the last line counts
    as parameters only if it holds at least 3 ``Key: value`` pairs, and everything
    after a ``Negative prompt:`` line is negative prompt. A1111's UI defaults (``Clip
    skip: 1``, ``Schedule type: Automatic``, ...) are not filled in: `params` holds
    exactly what the text says. Windows line endings are accepted.
    """
    *lines, last = text.replace("\r\n", "\n").strip().split("\n")
    if len(_PARAM_RE.findall(last)) < _MIN_PARAMS_IN_LAST_LINE:
        lines.append(last)
        last = ""
    prompt, negative = _split_prompts(lines)
    return prompt, negative, parse_params_line(last)
