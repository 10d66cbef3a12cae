"""`limner data emoji`: a captioned dataset of emoji scenes, built offline and deterministically.

Sprites are the colour bitmaps of Noto Color Emoji (SIL OFL 1.1, Debian
`fonts-noto-color-emoji`), names come from the `emoji` package (BSD-3-Clause). A scene is
one, two or three emoji of varied sizes and places on a solid or gradient background; its
caption says what is where ("a red apple to the left of a dog on a blue background").

On disk a dataset is small: the sprites, the concepts, and one scene *spec* per line;
images are rendered on the fly (`EmojiDataset`), so the same spec always gives the same
pixels. Building with the same arguments, font, `emoji` and Pillow versions gives the same
bytes.

The held-out split tests generalisation: it uses emoji pairs, caption templates and
synonyms that never occur in the training split.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import json
import os
import random
import re
import struct
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from limner.data import _emoji_tables as T
from limner.errors import InputFileError, InvalidRequestError, LimnerError

__all__ = [
    "CANVAS",
    "Background",
    "Caption",
    "Concept",
    "EmojiDataset",
    "Placed",
    "Scene",
    "Sprites",
    "Template",
    "PALETTE",
    "TEMPLATES",
    "add_arguments",
    "build_concepts",
    "build_emoji_dataset",
    "select_concepts",
    "caption",
    "contact_sheet",
    "export_pngs",
    "find_emoji_font",
    "main",
    "make_scene",
    "render_scene",
    "run",
]

FORMAT_VERSION = 1
CANVAS = 128
MIN_SIZE, MAX_SIZE = 32, 100
FONT_SIZE = 109  # the one strike of NotoColorEmoji.ttf: 136x128 colour bitmaps
MIN_CONCEPTS = 500
HELDOUT_SYNONYM_PERCENT = 30  # of the concepts with hand-written synonyms
HELDOUT_PAIR_COUNT = 300
# Everyday emoji that any subset of the concepts keeps (`select_concepts`): the ones the
# sample prompts, the README and the tests name.
ANCHOR_CONCEPTS = (
    "red apple", "dog", "cat", "pizza", "star", "rocket", "house", "red heart",
    "deciduous tree", "sun", "grinning face", "frog", "taxi", "banana", "fish",
)  # fmt: skip
SELECTION_SIDE = 16  # sprites compared at the latent resolution of the built-in model
FONT_ENV = "LIMNER_EMOJI_FONT"
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",  # Debian, Ubuntu
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",  # Arch
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",  # Fedora
    "/usr/share/fonts/google-noto-color-emoji-fonts/NotoColorEmoji.ttf",
    "/usr/share/fonts/truetype/NotoColorEmoji.ttf",
    "/usr/local/share/fonts/NotoColorEmoji.ttf",
    "~/.local/share/fonts/NotoColorEmoji.ttf",
    "~/.fonts/NotoColorEmoji.ttf",
)
INSTALL_HINT = (
    "install it with `sudo apt-get install fonts-noto-color-emoji` (Debian/Ubuntu), "
    f"or pass --font PATH (or set {FONT_ENV}) to a NotoColorEmoji.ttf"
)

# ------------------------------------------------------------------------------------------
# Colours
# ------------------------------------------------------------------------------------------

# Background colours: far enough apart (>= 80 in RGB) that a colour jittered by +-8 per
# channel is still nearest its own name.
PALETTE: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "black": (16, 16, 16),
    "gray": (128, 128, 128),
    "red": (215, 30, 35),
    "maroon": (120, 15, 30),
    "orange": (250, 135, 20),
    "yellow": (250, 220, 40),
    "light green": (150, 230, 110),
    "green": (30, 140, 50),
    "teal": (0, 120, 130),
    "light blue": (135, 195, 245),
    "blue": (30, 75, 215),
    "navy": (15, 25, 95),
    "purple": (125, 50, 175),
    "pink": (245, 150, 195),
    "brown": (125, 75, 35),
}
_PALETTE_NAMES = tuple(PALETTE)
_PALETTE_RGB = np.array([PALETTE[n] for n in _PALETTE_NAMES], dtype=np.int32)
COLOR_JITTER = 8
MIN_CONTRAST = 70.0  # background vs an emoji's mean colour, RGB distance


def nearest_palette_color(rgb: Sequence[float]) -> str:
    """The palette name nearest to an RGB triple."""
    d = ((_PALETTE_RGB - np.asarray(rgb, dtype=np.float64)) ** 2).sum(axis=1)
    return _PALETTE_NAMES[int(np.argmin(d))]


# ------------------------------------------------------------------------------------------
# English: articles
# ------------------------------------------------------------------------------------------

_PREPOSITIONS = re.compile(
    r" (?:of|with|in|on|at|from|for|behind|showing|pointing|holding|playing|taking|"
    r"getting|wearing|without|over|under|to|and|covering|blowing|savoring|screaming)\b"
)


def article(phrase: str) -> str:
    """'a', 'an', 'the' or '' (plurals, mass nouns, proper names) for a noun phrase."""
    if phrase in T.NO_ARTICLE or phrase.lower() in T.NO_ARTICLE:
        return ""
    if phrase in T.THE_ARTICLE:
        return "the"
    head = _PREPOSITIONS.split(phrase, maxsplit=1)[0]
    words = head.lower().split()
    if any(w in T.IRREGULAR_PLURALS for w in words):
        return ""
    last = words[-1] if words else ""
    if last.endswith("s") and not last.endswith(("ss", "us", "is", "os")):
        return ""
    return indefinite_article(phrase)


def indefinite_article(phrase: str) -> str:
    low = phrase.lower()
    if low.startswith(T.AN_BEFORE_CONSONANT):
        return "an"
    if low[:1] in "aeiou" and not low.startswith(T.A_BEFORE_VOWEL):
        return "an"
    return "a"


def with_article(phrase: str) -> str:
    a = article(phrase)
    return f"{a} {phrase}" if a else phrase


# ------------------------------------------------------------------------------------------
# Fonts
# ------------------------------------------------------------------------------------------


def find_emoji_font(font: str | os.PathLike[str] | None = None) -> Path:
    """Path of NotoColorEmoji.ttf: `font`, else $LIMNER_EMOJI_FONT, else the usual places.

    Raises `InputFileError` (a `LimnerError`) saying how to install it when none is found.
    """
    if font is not None:
        p = Path(font).expanduser()
        if not p.is_file():
            raise InputFileError(f"emoji font {p} does not exist; {INSTALL_HINT}")
        return p
    env = os.environ.get(FONT_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise InputFileError(f"${FONT_ENV} names {p}, which does not exist; {INSTALL_HINT}")
        return p
    for c in FONT_CANDIDATES:
        p = Path(c).expanduser()
        if p.is_file():
            return p
    raise InputFileError(
        "the Noto Color Emoji font is not installed (looked in "
        + ", ".join(FONT_CANDIDATES[:3])
        + ", ...); "
        + INSTALL_HINT
    )


def _load_font(path: Path) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(str(path), FONT_SIZE, layout_engine=ImageFont.Layout.BASIC)
    except OSError as e:
        raise InputFileError(
            f"cannot load {path} as a colour bitmap emoji font at size {FONT_SIZE} ({e}); "
            "limner needs the CBDT font NotoColorEmoji.ttf: " + INSTALL_HINT
        ) from e


def font_names(path: Path) -> dict[int, str]:
    """Strings of a TrueType font's `name` table (0 copyright, 1 family, 5 version, ...)."""
    data = path.read_bytes()
    out: dict[int, str] = {}
    try:
        (num_tables,) = struct.unpack_from(">H", data, 4)
        for k in range(num_tables):
            tag, _, offset, _ = struct.unpack_from(">4sIII", data, 12 + 16 * k)
            if tag != b"name":
                continue
            _, count, string_offset = struct.unpack_from(">HHH", data, offset)
            best: dict[int, tuple[int, str]] = {}
            for r in range(count):
                plat, enc, lang, nid, length, off = struct.unpack_from(
                    ">HHHHHH", data, offset + 6 + 12 * r
                )
                raw = data[offset + string_offset + off : offset + string_offset + off + length]
                if plat == 3 and enc in (0, 1, 10):
                    rank, text = (0 if lang == 0x409 else 1), raw.decode("utf-16-be", "replace")
                elif plat == 0:
                    rank, text = 2, raw.decode("utf-16-be", "replace")
                elif plat == 1 and enc == 0:
                    rank, text = 3, raw.decode("mac_roman", "replace")
                else:
                    continue
                if nid not in best or rank < best[nid][0]:
                    best[nid] = (rank, text)
            out = {nid: text.strip() for nid, (_, text) in best.items()}
    except struct.error:
        return {}
    return out


# ------------------------------------------------------------------------------------------
# Concepts
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    """One emoji the dataset draws and names."""

    id: int
    name: str
    emoji: str
    codepoints: tuple[int, ...]
    category: str
    synonyms: tuple[str, ...] = ()  # used in training captions
    heldout_synonyms: tuple[str, ...] = ()  # only in the held-out split
    emoji_name: str = ""  # the `emoji` package's name, before renaming

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "article": article(self.name),
            "emoji": self.emoji,
            "codepoints": [f"U+{c:04X}" for c in self.codepoints],
            "category": self.category,
            "synonyms": list(self.synonyms),
            "heldout_synonyms": list(self.heldout_synonyms),
            "emoji_name": self.emoji_name,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Concept:
        return cls(
            id=int(d["id"]),
            name=d["name"],
            emoji=d["emoji"],
            codepoints=tuple(int(c[2:], 16) for c in d["codepoints"]),
            category=d["category"],
            synonyms=tuple(d["synonyms"]),
            heldout_synonyms=tuple(d["heldout_synonyms"]),
            emoji_name=d.get("emoji_name", ""),
        )


@dataclass(frozen=True)
class _Candidate:
    cp: int
    name: str
    emoji_name: str
    aliases: tuple[str, ...]


_CLEAN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9 '.\-\u00f1]*")
_COLOR_WORDS = ("red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white")
_COLOR_WORDS += ("pink", "grey", "gray", "light blue")
_RELATION_WORDS = frozenset({"left", "right", "above", "below", "leftwards", "rightwards"})


def _import_emoji():
    try:
        import emoji
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise LimnerError(
            "building the emoji dataset needs the `emoji` package (emoji names): pip install emoji"
        ) from e
    return emoji


def _clean(name: str) -> str:
    return name.strip(":").replace("_", " ").replace("\u2019", "'")


def _candidates() -> list[_Candidate]:
    """Single-codepoint emoji with clean names, minus the curated exclusions."""
    emoji = _import_emoji()
    seen: set[int] = set()
    out: list[_Candidate] = []
    for char, info in emoji.EMOJI_DATA.items():
        base = char.replace("\ufe0f", "")
        if len(base) != 1 or info.get("status") != emoji.STATUS["fully_qualified"]:
            continue
        cp = ord(base)
        if cp in seen or 0x1F1E6 <= cp <= 0x1F1FF or 0x1F3FB <= cp <= 0x1F3FF:
            continue  # regional indicators (flags), skin tones
        if float(info.get("E", 99)) > T.MAX_EMOJI_VERSION:
            continue
        if cp in T.EXCLUDED_CODEPOINTS or cp in T.NEAR_DUPLICATES:
            continue
        raw = _clean(info["en"])
        name = T.RENAMES.get(cp, raw)
        if not _CLEAN_NAME.fullmatch(name) or len(name.split()) > 5:
            continue
        if _RELATION_WORDS & set(name.lower().replace("-", " ").split()):
            continue
        aliases = tuple(_clean(a) for a in info.get("alias", ()))
        if name != raw:
            aliases = (raw, *aliases)
        seen.add(cp)
        out.append(_Candidate(cp, name, raw, aliases))
    out.sort(key=lambda c: c.cp)
    return out


def _key(phrase: str) -> str:
    return " ".join(phrase.lower().replace("-", " ").split())


def _squash(phrase: str) -> str:
    return re.sub(r"[^a-z0-9]", "", phrase.lower())


def _alias_synonyms(c: _Candidate) -> list[str]:
    out = []
    name_words = set(_key(c.name).split())
    for a in c.aliases:
        a = a.replace("_", " ").strip()
        if not re.fullmatch(r"[A-Za-z][A-Za-z '\-]*[A-Za-z]", a):
            continue
        if _key(a) in T.BAD_ALIASES or _squash(a) == _squash(c.name):
            continue
        words = set(_key(a).split())
        if "heavy" in words or (words & set(_COLOR_WORDS)) - name_words:
            continue
        if len(words) == 1 and a.endswith("ing"):
            continue
        if c.name.endswith(" face") and "face" not in a and " " not in a:
            a = f"{a} face"
        out.append(a)
    return out


def _auto_synonyms(c: _Candidate, names: set[str]) -> list[str]:
    out = []
    words = c.name.split()
    for cw in _COLOR_WORDS:  # "red apple" -> "apple" (kept only if unambiguous)
        if c.name.startswith(cw + " ") and len(words) > len(cw.split()):
            out.append(c.name[len(cw) + 1 :])
    m = re.fullmatch(r"(person|man|woman) (\w+ing)", c.name)
    if m:  # "person running" -> "running person"
        out.append(f"{m.group(2)} {m.group(1)}")
    if c.name.endswith(" face") and c.name[:-5] in names:  # "dog face" -> "face of a dog"
        out.append(f"face of {with_article(c.name[:-5])}")
    return out


def _resolve_synonyms(cands: Sequence[_Candidate]) -> list[list[tuple[str, int]]]:
    """Per candidate: (synonym, source) pairs; source 1 hand-written, 2 alias, 3 automatic.

    A synonym is kept only where it names one concept: never another concept's name, and
    of the concepts claiming it, only the one with the strongest source (none on a tie).
    """
    names = {c.name for c in cands}
    canonical = {_key(c.name): i for i, c in enumerate(cands)}
    if len(canonical) != len(cands):
        raise LimnerError("two emoji concepts have the same name")
    claims: dict[str, list[tuple[int, int, str]]] = {}
    for i, c in enumerate(cands):
        sources = [(1, s) for s in T.HAND_SYNONYMS.get(c.name, ())]
        sources += [(2, s) for s in _alias_synonyms(c)]
        sources += [(3, s) for s in _auto_synonyms(c, names)]
        for src, s in sources:
            k = _key(s)
            if _RELATION_WORDS & set(k.split()) or k == _key(c.name):
                continue
            claims.setdefault(k, []).append((src, i, s))
    out: list[list[tuple[str, int]]] = [[] for _ in cands]
    for k, cl in claims.items():
        if k in canonical:
            continue
        best = min(src for src, _, _ in cl)
        winners = {i for src, i, _ in cl if src == best}
        if len(winners) != 1:
            continue
        (i,) = winners
        src, _, s = min((src, j, s) for src, j, s in cl if j == i)
        out[i].append((s, src))
    for i, c in enumerate(cands):  # order: hand-written as written, then the rest
        hand = [_key(s) for s in T.HAND_SYNONYMS.get(c.name, ())]
        out[i].sort(key=lambda t: (t[1], hand.index(_key(t[0])) if t[1] == 1 else 0, t[0]))
    return out


def _heldout_synonym(name: str) -> bool:
    h = int.from_bytes(hashlib.sha256(f"limner-emoji-heldout-synonym:{name}".encode()).digest())
    return h % 100 < HELDOUT_SYNONYM_PERCENT


def check_tables(cands: Sequence[_Candidate] | None = None) -> list[str]:
    """Problems with the curated tables against the `emoji` package (empty when fine)."""
    cands = _candidates() if cands is None else cands
    names = {c.name for c in cands}
    problems = [f"synonyms for unknown concept {n!r}" for n in T.HAND_SYNONYMS if n not in names]
    cps = {c.cp for c in cands}
    problems += [f"rename of dropped U+{cp:04X}" for cp in T.RENAMES if cp not in cps]
    problems += [
        f"near-duplicate U+{a:04X} kept as dropped U+{b:04X}"
        for a, b in T.NEAR_DUPLICATES.items()
        if b not in cps
    ]
    return problems


def _render_glyph(font: ImageFont.FreeTypeFont, char: str) -> np.ndarray | None:
    im = Image.new("RGBA", (136, 128), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((0, 0), char, font=font, embedded_color=True)
    box = im.getbbox()
    if box is None:
        return None
    return np.asarray(im.crop(box)).copy()


def build_concepts(
    font: str | os.PathLike[str] | None = None,
) -> tuple[list[Concept], list[np.ndarray]]:
    """The concepts and their sprites (uint8 RGBA arrays cropped to the drawn pixels).

    Concepts are the curated single-codepoint emoji that the font draws, in codepoint
    order; ids are positions in that order.
    """
    path = find_emoji_font(font)
    ft = _load_font(path)
    cands = _candidates()
    kept: list[_Candidate] = []
    sprites: list[np.ndarray] = []
    for c in cands:
        s = _render_glyph(ft, chr(c.cp))
        if s is not None:
            kept.append(c)
            sprites.append(s)
    if len(kept) < MIN_CONCEPTS:
        raise InputFileError(
            f"{path} draws only {len(kept)} of the {len(cands)} emoji limner uses (at least "
            f"{MIN_CONCEPTS} are needed); use Noto Color Emoji 2.042 or newer: " + INSTALL_HINT
        )
    syns = _resolve_synonyms(kept)
    concepts = []
    for i, (c, sy) in enumerate(zip(kept, syns, strict=True)):
        trained = [s for s, _ in sy]
        held: list[str] = []
        hand = [s for s, src in sy if src == 1]
        if hand and _heldout_synonym(c.name):
            held = [hand[0]]
            trained.remove(hand[0])
        concepts.append(
            Concept(
                id=i,
                name=c.name,
                emoji=chr(c.cp),
                codepoints=(c.cp,),
                category=T.category(c.cp),
                synonyms=tuple(trained),
                heldout_synonyms=tuple(held),
                emoji_name=c.emoji_name,
            )
        )
    return concepts, sprites


# ------------------------------------------------------------------------------------------
# Scenes
# ------------------------------------------------------------------------------------------

RELATIONS = ("left of", "right of", "above", "below")


@dataclass(frozen=True)
class Background:
    """A solid colour, or a two-colour linear gradient.

    `direction` "vertical": colors[0] at the top, colors[1] at the bottom; "horizontal":
    colors[0] on the left. `rgb` are the exact colours drawn (palette colour + jitter).
    """

    kind: str  # "solid" | "gradient"
    colors: tuple[str, ...]
    rgb: tuple[tuple[int, int, int], ...]
    direction: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "colors": list(self.colors),
            "rgb": [list(c) for c in self.rgb],
        }
        if self.direction:
            d["direction"] = self.direction
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Background:
        return cls(
            d["kind"],
            tuple(d["colors"]),
            tuple(tuple(int(v) for v in c) for c in d["rgb"]),  # type: ignore[misc]
            d.get("direction"),
        )


@dataclass(frozen=True)
class Placed:
    """An emoji drawn inside the square box (x, y, x+size, y+size), longest side = size."""

    concept: int
    size: int
    x: int
    y: int

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.size / 2, self.y + self.size / 2)

    def to_json(self) -> dict[str, int]:
        return {"id": self.concept, "size": self.size, "x": self.x, "y": self.y}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Placed:
        return cls(int(d["id"]), int(d["size"]), int(d["x"]), int(d["y"]))


@dataclass(frozen=True)
class Scene:
    """What to draw. For 2-3 items, `relation` holds between items[k] and items[k+1]."""

    background: Background
    items: tuple[Placed, ...]
    relation: str | None = None

    def spatial_order(self) -> tuple[Placed, ...]:
        """Items left to right (horizontal relations) or top to bottom (vertical)."""
        if self.relation in ("right of", "below"):
            return self.items[::-1]
        return self.items

    @property
    def orientation(self) -> str | None:
        if self.relation is None:
            return None
        return "h" if self.relation in ("left of", "right of") else "v"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "bg": self.background.to_json(),
            "items": [p.to_json() for p in self.items],
        }
        if self.relation:
            d["relation"] = self.relation
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Scene:
        return cls(
            Background.from_json(d["bg"]),
            tuple(Placed.from_json(p) for p in d["items"]),
            d.get("relation"),
        )


def _jitter(rng: random.Random, rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(  # type: ignore[return-value]
        min(255, max(0, v + rng.randint(-COLOR_JITTER, COLOR_JITTER))) for v in rgb
    )


def _pick_colors(rng: random.Random, n: int, avoid: Sequence[Sequence[float]]) -> list[str]:
    ok = [
        name
        for name in _PALETTE_NAMES
        if all(np.linalg.norm(np.subtract(PALETTE[name], a)) >= MIN_CONTRAST for a in avoid)
    ]
    if len(ok) < n:
        ok = list(_PALETTE_NAMES)
    picked: list[str] = []
    while len(picked) < n:
        c = rng.choice(ok)
        if c not in picked:
            picked.append(c)
    return picked


def _layout_row(rng: random.Random, n: int) -> list[tuple[int, int, int]]:
    """(size, along, across) for n emoji in a row along one axis, in spatial order.

    Boxes do not overlap along the axis, and consecutive centres differ across the axis
    by at most half their distance along it, so the row reads unambiguously.
    """
    smax = {2: 92, 3: 56}[n]
    gap = 4
    budget = CANVAS - gap * (n - 1)
    while True:
        sizes = [rng.randint(MIN_SIZE, smax) for _ in range(n)]
        if sum(sizes) <= budget:
            break
    free = budget - sum(sizes)
    weights = [rng.random() + 1e-3 for _ in range(n + 1)]
    total = sum(weights)
    parts = [int(free * w / total) for w in weights]
    along = []
    pos = parts[0]
    for k, s in enumerate(sizes):
        along.append(pos)
        pos += s + gap + parts[k + 1]
    for _ in range(50):
        across = [rng.randint(0, CANVAS - sizes[0])]
        for k in range(1, n):
            c_prev = across[k - 1] + sizes[k - 1] / 2
            dist = (along[k] + sizes[k] / 2) - (along[k - 1] + sizes[k - 1] / 2)
            lo = max(0, int(np.ceil(c_prev - dist / 2 - sizes[k] / 2)))
            hi = min(CANVAS - sizes[k], int(np.floor(c_prev + dist / 2 - sizes[k] / 2)))
            if lo > hi:
                break
            across.append(rng.randint(lo, hi))
        if len(across) == n:
            break
    else:  # pragma: no cover - centred rows always fit
        across = [(CANVAS - s) // 2 for s in sizes]
    return list(zip(sizes, along, across, strict=True))


def make_scene(
    rng: random.Random,
    n_concepts: int,
    *,
    n_items: int | None = None,
    concepts: Sequence[int] | None = None,
    avoid_pairs: frozenset[frozenset[int]] = frozenset(),
    concept_rgb: Sequence[Sequence[float]] | None = None,
) -> Scene:
    """A random scene: 1-3 emoji (ids < n_concepts), sizes, places, relation, background.

    `concepts` fixes the emoji (in `items` order); otherwise they are drawn uniformly,
    distinct, with no two forming a pair in `avoid_pairs`. `concept_rgb[id]` (mean colours)
    steers background colours away from those of the emoji. Only `rng` is consumed.
    """
    if concepts is not None:
        n_items = len(concepts)
    elif n_items is None:
        u = rng.random()
        n_items = 1 if u < 0.40 else 2 if u < 0.85 else 3
    if not 1 <= n_items <= 3:
        raise InvalidRequestError(f"a scene has 1 to 3 emoji, not {n_items}")
    if concepts is None:
        if n_concepts < n_items:
            raise InvalidRequestError(f"{n_items} distinct emoji from {n_concepts} concepts")
        for _ in range(10_000):
            ids = rng.sample(range(n_concepts), n_items)
            if not avoid_pairs or all(
                frozenset((a, b)) not in avoid_pairs
                for k, a in enumerate(ids)
                for b in ids[k + 1 :]
            ):
                break
        else:
            raise InvalidRequestError("avoid_pairs leaves no combination of emoji to draw")
    else:
        ids = list(concepts)

    avoid = [concept_rgb[i] for i in ids] if concept_rgb is not None else []
    if rng.random() < 0.6:
        (c,) = _pick_colors(rng, 1, avoid)
        bg = Background("solid", (c,), (_jitter(rng, PALETTE[c]),))
    else:
        c1, c2 = _pick_colors(rng, 2, avoid)
        direction = rng.choice(("vertical", "horizontal"))
        bg = Background(
            "gradient", (c1, c2), (_jitter(rng, PALETTE[c1]), _jitter(rng, PALETTE[c2])), direction
        )

    if n_items == 1:
        size = rng.randint(MIN_SIZE, MAX_SIZE)
        x, y = rng.randint(0, CANVAS - size), rng.randint(0, CANVAS - size)
        return Scene(bg, (Placed(ids[0], size, x, y),))

    relation = rng.choice(RELATIONS)
    row = _layout_row(rng, n_items)
    horizontal = relation in ("left of", "right of")
    placed = [
        Placed(0, s, a, c) if horizontal else Placed(0, s, c, a) for s, a, c in row
    ]  # spatial order
    if relation in ("right of", "below"):
        placed = placed[::-1]
    items = tuple(Placed(cid, p.size, p.x, p.y) for cid, p in zip(ids, placed, strict=True))
    return Scene(bg, items, relation)


def select_concepts(
    concepts: Sequence[Concept], arrays: Sequence[np.ndarray], count: int
) -> list[int]:
    """Ids of `count` concepts that differ most from each other in appearance, in id order.

    A small model draws 128x128 scenes from 16x16 latents, where near-duplicates (the
    clock faces, the many yellow hands and faces) cannot be told apart; fewer, more
    distinct concepts let each be seen more often in the same training budget. Greedy
    farthest-point selection (Gonzalez 1985) on the sprites composited on grey and
    box-filtered to 16x16, started from the ANCHOR_CONCEPTS that the dataset has.
    Deterministic: the same concepts and sprites give the same ids.
    """
    if not MIN_CONCEPTS <= count <= len(concepts):
        raise InvalidRequestError(
            f"--concepts must be between {MIN_CONCEPTS} and {len(concepts)} (the emoji the "
            f"font draws), not {count}"
        )
    feats = np.stack([_appearance(a) for a in arrays])
    by_name = {c.name: c.id for c in concepts}
    chosen = [by_name[n] for n in ANCHOR_CONCEPTS if n in by_name][:count] or [0]
    dist = np.full(len(feats), np.inf)
    for k in chosen:
        dist = np.minimum(dist, ((feats - feats[k]) ** 2).sum(1))
    while len(chosen) < count:
        k = int(dist.argmax())  # the first of equals: ties break by id
        chosen.append(k)
        dist = np.minimum(dist, ((feats - feats[k]) ** 2).sum(1))
    return sorted(chosen)


def _appearance(sprite: np.ndarray) -> np.ndarray:
    """The sprite centred on mid-grey, its longest side SELECTION_SIDE pixels, as floats."""
    side = SELECTION_SIDE * 8
    im = Image.fromarray(np.ascontiguousarray(sprite), "RGBA")
    scale = side / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
    canvas = Image.new("RGBA", (side, side), (128, 128, 128, 255))
    canvas.alpha_composite(im, ((side - im.width) // 2, (side - im.height) // 2))
    small = canvas.convert("RGB").resize((SELECTION_SIDE,) * 2, Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32).ravel() / 255.0


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------


class Sprites:
    """Emoji sprites (RGBA, cropped) with a small cache of resized copies."""

    def __init__(self, arrays: Sequence[np.ndarray], cache_size: int = 4096):
        self.images = [Image.fromarray(np.ascontiguousarray(a), "RGBA") for a in arrays]
        self._resized = functools.lru_cache(maxsize=cache_size)(self._resize)

    def __len__(self) -> int:
        return len(self.images)

    def _resize(self, concept: int, size: int) -> Image.Image:
        im = self.images[concept]
        w, h = im.size
        scale = size / max(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        return im.resize(new, Image.Resampling.LANCZOS)

    def resized(self, concept: int, size: int) -> Image.Image:
        """The sprite with its longest side `size` pixels."""
        return self._resized(concept, size)

    def mean_rgb(self) -> np.ndarray:
        """(N, 3) alpha-weighted mean colour of each sprite."""
        out = []
        for im in self.images:
            a = np.asarray(im, dtype=np.float64)
            w = a[..., 3:4] / 255.0
            out.append((a[..., :3] * w).sum((0, 1)) / max(w.sum(), 1e-6))
        return np.array(out)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Sprites:
        """From a dataset's sprites.npz."""
        with np.load(path) as z:
            arr, shapes = z["sprites"], z["shapes"]
        return cls([arr[i, :h, :w] for i, (h, w) in enumerate(shapes)])

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers
        return {"arrays": [np.asarray(im) for im in self.images]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["arrays"])  # type: ignore[misc]


def _background(bg: Background) -> np.ndarray:
    if bg.kind == "solid":
        return np.broadcast_to(np.array(bg.rgb[0], dtype=np.uint8), (CANVAS, CANVAS, 3)).copy()
    t = np.linspace(0.0, 1.0, CANVAS)[:, None]
    c0, c1 = np.array(bg.rgb[0], dtype=np.float64), np.array(bg.rgb[1], dtype=np.float64)
    line = np.rint(c0 * (1 - t) + c1 * t).astype(np.uint8)  # (CANVAS, 3)
    if bg.direction == "vertical":
        return np.broadcast_to(line[:, None, :], (CANVAS, CANVAS, 3)).copy()
    return np.broadcast_to(line[None, :, :], (CANVAS, CANVAS, 3)).copy()


def render_scene(scene: Scene, sprites: Sprites | Sequence[np.ndarray]) -> Image.Image:
    """The scene as a 128x128 RGB image."""
    if not isinstance(sprites, Sprites):
        sprites = Sprites(sprites)
    bg = scene.background
    if bg.kind == "solid":
        img = Image.new("RGB", (CANVAS, CANVAS), bg.rgb[0])
    else:
        img = Image.fromarray(_background(bg), "RGB")
    for p in scene.items:
        s = sprites.resized(p.concept, p.size)
        w, h = s.size
        img.paste(s, (p.x + (p.size - w) // 2, p.y + (p.size - h) // 2), s)
    return img


# ------------------------------------------------------------------------------------------
# Captions
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A caption pattern.

    kind: "1" (one emoji), "2h"/"2v" (two, left-right / top-bottom), "3h"/"3v", "2" (two,
    no placement). Fields: {e0} {e1} {e2} the emoji with articles in spatial order, {bg}
    " on a blue background" or "", {bgn} "a blue background" (always said), {where} the
    place of a single emoji ("in the top left corner"), {sized} "a small red apple".
    """

    id: str
    kind: str
    text: str
    heldout: bool = False

    def fields(self) -> set[str]:
        return set(re.findall(r"\{(\w+)\}", self.text))


def _t(id: str, kind: str, text: str, heldout: bool = False) -> Template:
    return Template(id, kind, text, heldout)


TEMPLATES: tuple[Template, ...] = (
    _t("s-plain", "1", "{e0}{bg}"),
    _t("s-emoji-of", "1", "an emoji of {e0}{bg}"),
    _t("s-picture", "1", "a picture of {e0}{bg}"),
    _t("s-emoji", "1", "{e0} emoji{bg}"),
    _t("s-bg-with", "1", "{bgn} with {e0}"),
    _t("s-where", "1", "{e0} {where}{bg}"),
    _t("s-sized", "1", "{sized}{bg}"),
    _t("s-icon", "1", "an icon of {e0}{bg}", heldout=True),
    _t("s-showing", "1", "{bgn} showing {e0}", heldout=True),
    _t("s-illustration", "1", "a simple illustration of {e0}{bg}", heldout=True),
    _t("h-left-of", "2h", "{e0} to the left of {e1}{bg}"),
    _t("h-right-of", "2h", "{e1} to the right of {e0}{bg}"),
    _t("h-on-left-right", "2h", "{e0} on the left and {e1} on the right{bg}"),
    _t("h-to-its-right", "2h", "{e0} and, to its right, {e1}{bg}"),
    _t("h-to-its-left", "2h", "{e1} and, to its left, {e0}{bg}"),
    _t("h-emoji-left-of", "2h", "an emoji of {e0} to the left of {e1}{bg}"),
    _t("h-bg-with", "2h", "{bgn} with {e0} on the left and {e1} on the right"),
    _t("h-with-to-its-left", "2h", "{e1} with {e0} to its left{bg}", heldout=True),
    _t("h-left-semicolon", "2h", "on the left, {e0}; on the right, {e1}{bg}", heldout=True),
    _t("v-above", "2v", "{e0} above {e1}{bg}"),
    _t("v-below", "2v", "{e1} below {e0}{bg}"),
    _t("v-top-bottom", "2v", "{e0} at the top and {e1} at the bottom{bg}"),
    _t("v-below-it", "2v", "{e0} and, below it, {e1}{bg}"),
    _t("v-above-it", "2v", "{e1} and, above it, {e0}{bg}"),
    _t("v-emoji-above", "2v", "an emoji of {e0} above {e1}{bg}"),
    _t("v-bg-with", "2v", "{bgn} with {e0} at the top and {e1} at the bottom"),
    _t("v-with-over-it", "2v", "{e1} with {e0} over it{bg}", heldout=True),
    _t("v-top-semicolon", "2v", "at the top, {e0}; at the bottom, {e1}{bg}", heldout=True),
    _t("p-and", "2", "{e0} and {e1}{bg}"),
    _t("h3-left-to-right", "3h", "{e0}, {e1} and {e2} from left to right{bg}"),
    _t("h3-middle", "3h", "{e0} on the left, {e1} in the middle and {e2} on the right{bg}"),
    _t("h3-right-to-left", "3h", "{e2}, {e1} and {e0} from right to left{bg}"),
    _t("h3-row", "3h", "a row of {e0}, {e1} and {e2}, left to right{bg}", heldout=True),
    _t("v3-top-to-bottom", "3v", "{e0}, {e1} and {e2} from top to bottom{bg}"),
    _t("v3-middle", "3v", "{e0} at the top, {e1} in the middle and {e2} at the bottom{bg}"),
    _t("v3-bottom-to-top", "3v", "{e2}, {e1} and {e0} from bottom to top{bg}"),
    _t("v3-column", "3v", "a column of {e0}, {e1} and {e2}, top to bottom{bg}", heldout=True),
)
TRAIN_TEMPLATES = tuple(t for t in TEMPLATES if not t.heldout)
HELDOUT_TEMPLATES = tuple(t for t in TEMPLATES if t.heldout)

# Background phrases ({a} article + colour, {c} colour, {a1}/{c1} first, {c2} second colour).
SOLID_PHRASES = ("on {a} background", "on {c}", "against {a} background", "with {a} background")
SOLID_NOUN = "{a} background"
GRADIENT_PHRASES = (
    "on {a1} to {c2} gradient",
    "on {a1} and {c2} gradient background",
    "on a {direction} {c1} to {c2} gradient",
)
GRADIENT_NOUN = "{a1} to {c2} gradient"
BG_OMIT_PROBABILITY = 0.25

_WHERE = (
    ("in the top left corner", "at the top", "in the top right corner"),
    ("on the left", "in the center", "on the right"),
    ("in the bottom left corner", "at the bottom", "in the bottom right corner"),
)
SMALL_MAX, LARGE_MIN = 44, 80


def _where(p: Placed) -> str | None:
    """Where a single emoji is, when its centre is clearly in one ninth of the canvas."""
    cx, cy = p.center
    third = CANVAS / 3

    def cell(v: float) -> int | None:
        k = int(v // third)
        if min(abs(v - third), abs(v - 2 * third)) < 6:
            return None
        return min(k, 2)

    col, row = cell(cx), cell(cy)
    if col is None or row is None:
        return None
    return _WHERE[row][col]


def _size_word(p: Placed) -> str | None:
    return "small" if p.size <= SMALL_MAX else "large" if p.size >= LARGE_MIN else None


def _bg_phrases(bg: Background, rng: random.Random) -> tuple[str, str]:
    """(phrase, noun phrase) naming the background."""
    if bg.kind == "solid":
        c = bg.colors[0]
        f = {"c": c, "a": f"{indefinite_article(c)} {c}"}
        return rng.choice(SOLID_PHRASES).format(**f), SOLID_NOUN.format(**f)
    c1, c2 = bg.colors
    f = {"c1": c1, "c2": c2, "a1": f"{indefinite_article(c1)} {c1}", "direction": bg.direction}
    return rng.choice(GRADIENT_PHRASES).format(**f), GRADIENT_NOUN.format(**f)


@dataclass(frozen=True)
class Caption:
    text: str
    template: str
    names: tuple[str, ...]  # the name used for each of scene.items
    background: bool  # whether the caption names the background


def _template_kind(scene: Scene) -> tuple[str, ...]:
    n = len(scene.items)
    if n == 1:
        return ("1",)
    if n == 2:
        return (f"2{scene.orientation}", "2")
    return (f"3{scene.orientation}",)


def caption(
    scene: Scene,
    rng: random.Random,
    templates: Sequence[Template],
    names: Mapping[int, Sequence[str]],
) -> Caption:
    """Describe a scene with one of `templates` (those that fit it, chosen uniformly).

    `names[id]` are the allowed names of a concept: the first with probability 1/2, else
    one of the others. The number of random draws does not depend on the names given
    when each concept has exactly one, so two captions of a scene that differ only in a
    name can be made from the same random state.
    """
    kinds = _template_kind(scene)
    only = scene.items[0]
    avail = []
    for t in templates:
        if t.kind not in kinds:
            continue
        f = t.fields()
        if "where" in f and _where(only) is None:
            continue
        if "sized" in f and _size_word(only) is None:
            continue
        avail.append(t)
    if not avail:
        raise InvalidRequestError(f"no caption template fits a scene of kind {kinds[0]}")
    t = rng.choice(avail)
    used = []
    for p in scene.items:
        options = names[p.concept]
        if len(options) == 1 or rng.random() < 0.5:
            used.append(options[0])
        else:
            used.append(options[1 + rng.randrange(len(options) - 1)])
    phrase, noun = _bg_phrases(scene.background, rng)
    say_bg = rng.random() >= BG_OMIT_PROBABILITY or "bgn" in t.fields()
    by_id = {p.concept: n for p, n in zip(scene.items, used, strict=True)}
    spatial = [by_id[p.concept] for p in scene.spatial_order()]
    fields: dict[str, str] = {f"e{k}": with_article(n) for k, n in enumerate(spatial)}
    fields["bg"] = f" {phrase}" if say_bg and "bgn" not in t.fields() else ""
    fields["bgn"] = noun
    if "where" in t.fields():
        fields["where"] = _where(only) or ""
    if "sized" in t.fields():
        word = _size_word(only) or ""
        art = article(spatial[0])
        a = art if art in ("", "the") else indefinite_article(word)
        fields["sized"] = f"{a} {word} {spatial[0]}".strip()
    text = t.text.format(**fields)
    return Caption(text, t.id, tuple(used), say_bg)


# ------------------------------------------------------------------------------------------
# The dataset on disk
# ------------------------------------------------------------------------------------------

HELDOUT_KINDS = (  # a cycle of 20: exact proportions in every held-out split
    ("single_template",) * 5
    + ("single_synonym",) * 4
    + ("single_name",) * 2
    + ("pair",) * 5
    + ("pair_template",) * 3
    + ("triple",) * 1
)


def heldout_pairs(n_concepts: int, count: int = HELDOUT_PAIR_COUNT) -> list[tuple[int, int]]:
    """The emoji pairs that never meet in training (fixed for a number of concepts)."""
    rng = random.Random(f"limner-emoji-heldout-pairs:{n_concepts}")
    seen: set[tuple[int, int]] = set()
    out = []
    while len(out) < count:
        a, b = sorted(rng.sample(range(n_concepts), 2))
        if (a, b) not in seen:
            seen.add((a, b))
            out.append((a, b))
    return out


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """np.savez_compressed with fixed timestamps, so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=6)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@dataclass
class _Context:
    concepts: list[Concept]
    train_names: dict[int, list[str]]
    canonical: dict[int, list[str]]
    pairs: list[tuple[int, int]]
    avoid: frozenset[frozenset[int]]
    concept_rgb: np.ndarray
    synonym_concepts: list[int] = field(default_factory=list)


def _record(
    i: int, split: str, kind: str, scene: Scene, cap: Caption, flags: dict[str, bool]
) -> dict[str, Any]:
    return {
        "i": i,
        "split": split,
        "kind": kind,
        "scene": scene.to_json(),
        "caption": cap.text,
        "template": cap.template,
        "names": list(cap.names),
        "bg_in_caption": cap.background,
        "heldout": flags,
    }


def _train_record(ctx: _Context, seed: int, i: int) -> dict[str, Any]:
    rng = random.Random(f"limner-emoji:{seed}:train:{i}")
    n = len(ctx.concepts)
    scene = make_scene(rng, n, avoid_pairs=ctx.avoid, concept_rgb=ctx.concept_rgb)
    cap = caption(scene, rng, TRAIN_TEMPLATES, ctx.train_names)
    kind = {1: "single", 2: "pair", 3: "triple"}[len(scene.items)]
    flags = {"template": False, "synonym": False, "pair": False}
    return _record(i, "train", kind, scene, cap, flags)


def _heldout_record(ctx: _Context, seed: int, i: int) -> dict[str, Any]:
    rng = random.Random(f"limner-emoji:{seed}:heldout:{i}")
    n = len(ctx.concepts)
    kind = HELDOUT_KINDS[i % len(HELDOUT_KINDS)]
    no_any = [t for t in TRAIN_TEMPLATES if t.kind != "2"]
    flags = {"template": False, "synonym": False, "pair": False}
    extra: dict[str, Any] = {}
    rgb = ctx.concept_rgb
    if kind in ("single_name", "single_template"):
        scene = make_scene(rng, n, n_items=1, concept_rgb=rgb)
        flags["template"] = kind == "single_template"
        cap = caption(scene, rng, HELDOUT_TEMPLATES if flags["template"] else no_any, ctx.canonical)
    elif kind == "single_synonym":
        cid = ctx.synonym_concepts[rng.randrange(len(ctx.synonym_concepts))]
        scene = make_scene(rng, n, concepts=[cid], concept_rgb=rgb)
        held = ctx.concepts[cid].heldout_synonyms
        syn = held[rng.randrange(len(held))]
        state = rng.getstate()
        cap = caption(scene, rng, no_any, {cid: [syn]})
        rng.setstate(state)
        control = caption(scene, rng, no_any, ctx.canonical)
        flags["synonym"] = True
        extra = {"control_caption": control.text, "control_names": list(control.names)}
    else:
        a, b = ctx.pairs[rng.randrange(len(ctx.pairs))]
        ids = [a, b] if rng.random() < 0.5 else [b, a]
        if kind == "triple":
            while True:
                c = rng.randrange(n)
                if c not in ids:
                    break
            ids.insert(rng.randrange(3), c)
        scene = make_scene(rng, n, concepts=ids, concept_rgb=rgb)
        flags["pair"] = True
        flags["template"] = kind == "pair_template"
        cap = caption(scene, rng, HELDOUT_TEMPLATES if flags["template"] else no_any, ctx.canonical)
    rec = _record(i, "heldout", kind, scene, cap, flags)
    rec.update(extra)
    return rec


def _source_info(font: Path) -> dict[str, Any]:
    import PIL

    names = font_names(font)
    try:
        from importlib.metadata import version

        emoji_version = version("emoji")
    except Exception:  # pragma: no cover
        emoji_version = getattr(_import_emoji(), "__version__", "unknown")
    return {
        "font_file": font.name,
        "font_sha256": hashlib.sha256(font.read_bytes()).hexdigest(),
        "font_family": names.get(1, ""),
        "font_version": names.get(5, ""),
        "font_copyright": names.get(0, ""),
        "font_license": names.get(13, ""),
        "font_license_url": names.get(14, ""),
        "emoji_package_version": emoji_version,
        "pillow_version": PIL.__version__,
    }


def build_emoji_dataset(
    out: str | os.PathLike[str],
    *,
    train_size: int = 200_000,
    heldout_size: int = 2_000,
    seed: int = 0,
    font: str | os.PathLike[str] | None = None,
    concepts: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the dataset to `out` (created if needed) and return its path.

    `concepts` > 0 keeps that many (`select_concepts`), renumbered 0.. in codepoint
    order; 0 keeps every emoji the font draws.
    Files: sprites.npz, concepts.json, train.jsonl, heldout.jsonl, LICENSE-DATA.md,
    README.md. Same arguments (and font, `emoji`, Pillow versions) -> identical bytes.
    """
    if train_size < 0 or heldout_size < 0:
        raise InvalidRequestError("dataset sizes must be >= 0")
    if concepts < 0:
        raise InvalidRequestError("--concepts must be >= 0 (0: every emoji the font draws)")
    say = progress or (lambda _msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    font_path = find_emoji_font(font)
    t0 = time.perf_counter()
    all_concepts, arrays = build_concepts(font_path)
    concept_count, concepts = concepts, all_concepts
    if concept_count:
        kept = select_concepts(all_concepts, arrays, concept_count)
        concepts = [dataclasses.replace(all_concepts[i], id=k) for k, i in enumerate(kept)]
        arrays = [arrays[i] for i in kept]
    say(f"{len(concepts)} emoji concepts ({time.perf_counter() - t0:.1f}s)")

    shapes = np.array([a.shape[:2] for a in arrays], dtype=np.int16)
    packed = np.zeros((len(arrays), int(shapes[:, 0].max()), int(shapes[:, 1].max()), 4), np.uint8)
    for k, a in enumerate(arrays):
        packed[k, : a.shape[0], : a.shape[1]] = a
    _write_npz(
        out / "sprites.npz",
        {
            "sprites": packed,
            "shapes": shapes,
            "codepoints": np.array([c.codepoints[0] for c in concepts], dtype=np.int32),
        },
    )

    sprites = Sprites(arrays, cache_size=0)
    pairs = heldout_pairs(len(concepts))
    ctx = _Context(
        concepts=concepts,
        train_names={c.id: [c.name, *c.synonyms] for c in concepts},
        canonical={c.id: [c.name] for c in concepts},
        pairs=pairs,
        avoid=frozenset(frozenset(p) for p in pairs),
        concept_rgb=np.rint(sprites.mean_rgb()),
        synonym_concepts=[c.id for c in concepts if c.heldout_synonyms],
    )
    source = _source_info(font_path)
    meta = {
        "format_version": FORMAT_VERSION,
        "canvas": CANVAS,
        "sizes": [MIN_SIZE, MAX_SIZE],
        "seed": seed,
        "concept_selection": (
            {"count": concept_count, "of": len(all_concepts), "rule": "select_concepts"}
            if concept_count
            else None
        ),
        "train_size": train_size,
        "heldout_size": heldout_size,
        "source": source,
        "palette": {k: list(v) for k, v in PALETTE.items()},
        "templates": [
            {"id": t.id, "kind": t.kind, "text": t.text, "heldout": t.heldout} for t in TEMPLATES
        ],
        "background_phrases": {
            "solid": list(SOLID_PHRASES),
            "solid_noun": SOLID_NOUN,
            "gradient": list(GRADIENT_PHRASES),
            "gradient_noun": GRADIENT_NOUN,
        },
        "heldout_pairs": [list(p) for p in pairs],
        "heldout_kinds": sorted(set(HELDOUT_KINDS)),
        "concepts": [c.to_json() for c in concepts],
    }
    (out / "concepts.json").write_text(
        json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )

    t1 = time.perf_counter()
    for split, size, make in (
        ("train", train_size, _train_record),
        ("heldout", heldout_size, _heldout_record),
    ):
        with open(out / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for i in range(size):
                f.write(_dumps(make(ctx, seed, i)) + "\n")
                if progress and (i + 1) % 50_000 == 0:
                    say(f"{split}: {i + 1}/{size} scenes")
    say(f"wrote {train_size} + {heldout_size} scenes ({time.perf_counter() - t1:.1f}s)")

    stats = _stats(concepts, pairs)
    (out / "LICENSE-DATA.md").write_text(_license_text(source), encoding="utf-8")
    (out / "README.md").write_text(
        _readme_text(meta, stats, train_size, heldout_size, seed), encoding="utf-8"
    )
    return out


def _stats(concepts: Sequence[Concept], pairs: Sequence[tuple[int, int]]) -> dict[str, int]:
    return {
        "concepts": len(concepts),
        "synonyms": sum(len(c.synonyms) for c in concepts),
        "concepts_with_synonyms": sum(1 for c in concepts if c.synonyms or c.heldout_synonyms),
        "heldout_synonyms": sum(len(c.heldout_synonyms) for c in concepts),
        "templates": len(TRAIN_TEMPLATES),
        "heldout_templates": len(HELDOUT_TEMPLATES),
        "heldout_pairs": len(pairs),
    }


def _license_text(source: Mapping[str, Any]) -> str:
    here = Path(__file__).parent / "licenses"
    ofl = (here / "OFL-1.1.txt").read_text(encoding="utf-8")
    bsd = (here / "emoji-package-BSD-3-Clause.txt").read_text(encoding="utf-8")
    return f"""# Licences of this dataset

This dataset, and any model trained on it, contains or is derived from the works below.
Ship this file with the data and with the weights.

## Emoji images (`sprites.npz`): Noto Color Emoji, SIL Open Font License 1.1

The sprites are the colour bitmap glyphs of the font `{source["font_file"]}`
({source["font_family"]}, {source["font_version"]}), cropped to their drawn pixels.

    {source["font_copyright"]}

Licence: {source["font_license"] or "SIL Open Font License, Version 1.1"}
{source["font_license_url"] or "https://openfontlicense.org"}

Upstream: https://github.com/googlefonts/noto-emoji (Debian: fonts-noto-color-emoji).
The font's copyright notice and licence text follow, as the licence asks.

```
{ofl.rstrip()}
```

## Emoji names (`concepts.json`): the `emoji` Python package, BSD-3-Clause

Concept names (and some synonyms) are taken from the English emoji names of the `emoji`
package, version {source["emoji_package_version"]} (https://github.com/carpedm20/emoji),
which derives them from the Unicode CLDR short names (Unicode License v3,
https://www.unicode.org/license.txt).

```
{bsd.rstrip()}
```

## Everything else

Scene specifications, captions, templates, hand-written synonyms and the selection of
emoji were generated or written by limner, and are under limner's licence (Apache-2.0).
"""


def _readme_text(
    meta: Mapping[str, Any], stats: Mapping[str, int], train: int, heldout: int, seed: int
) -> str:
    src = meta["source"]
    cmd = f"limner data emoji --out DIR --train-size {train} --heldout-size {heldout} --seed {seed}"
    if meta.get("concept_selection"):
        cmd += f" --concepts {meta['concept_selection']['count']}"
    return f"""# limner emoji scenes

Captioned 128x128 scenes of one to three emoji on solid or gradient backgrounds, built by
limner for its small built-in text-to-image model. Example captions:
"a red apple to the left of a dog on a blue background", "a dog and, to its right, a red
apple", "an emoji of a taxi on an orange to navy gradient".

Built with:

    {cmd}

Same command, font, `emoji` and Pillow versions -> the same bytes.

## Counts

| | |
|---|---|
| concepts (distinct emoji) | {stats["concepts"]} |
| training synonyms | {stats["synonyms"]} (for {stats["concepts_with_synonyms"]} concepts) |
| held-out synonyms | {stats["heldout_synonyms"]} |
| caption templates | {stats["templates"]} training, {stats["heldout_templates"]} held-out |
| held-out emoji pairs | {stats["heldout_pairs"]} |
| background colours | {len(meta["palette"])} |
| training scenes | {train} |
| held-out scenes | {heldout} |

## Files

- `sprites.npz`: `sprites` (N, H, W, 4) uint8 RGBA, each sprite at the top left of its
  slot; `shapes` (N, 2) its height and width; `codepoints` (N,).
- `concepts.json`: concepts (id, name, emoji, category, synonyms, held-out synonyms),
  palette, templates, held-out pairs, and the versions of the sources.
- `train.jsonl`, `heldout.jsonl`: one scene a line: `scene` (background, emoji with size
  and box x, y, relation), `caption`, `template`, `names` (the name used for each emoji),
  `kind`, and `heldout` flags saying whether the caption uses a held-out template,
  synonym or emoji pair. Held-out synonym lines add `control_caption`: the same caption
  with the trained name.
- `LICENSE-DATA.md`: licences; ship it with the data and with trained weights.

Images are rendered from the specs: `limner.data.emoji.EmojiDataset(DIR, "train")[i]`
gives (128x128x3 uint8 array, caption).

## How it was built

- Emoji: single-codepoint emoji of Unicode Emoji <= {T.MAX_EMOJI_VERSION} with clean English
  names; no flags, skin-tone or ZWJ variants, keycaps, letter and symbol tiles, arrows or
  clock faces; near-duplicates that look alike were dropped by hand.
- Sprites: `{src["font_file"]}` ({src["font_version"]}), rendered by Pillow
  {src["pillow_version"]} at size {FONT_SIZE} and cropped to their drawn pixels.
- Names: `emoji` {src["emoji_package_version"]}; synonyms hand-written, from the package's
  aliases, and automatic ("person running" -> "running person").
- Scenes: 40% one emoji (longest side 32-100 px, anywhere), 45% two, 15% three in a row,
  left-right or top-bottom, not overlapping, the relation unambiguous; 60% solid
  backgrounds, 40% two-colour gradients; {len(meta["palette"])} named colours (jittered by
  +-{COLOR_JITTER}), chosen to contrast with the emoji.
- Captions: a template chosen uniformly among those that fit; each emoji called by its
  name half the time, else by one of its synonyms; the background named in
  {round(100 * (1 - BG_OMIT_PROBABILITY))}% of captions.

## Held out

Never in `train.jsonl`: {stats["heldout_pairs"]} emoji pairs, {stats["heldout_templates"]}
caption templates, {stats["heldout_synonyms"]} synonyms. `heldout.jsonl` cycles through:

| kind | what | share |
|---|---|---|
| `single_template` | one emoji, held-out template, trained name | 25% |
| `single_synonym` | one emoji, training template, held-out synonym (+ `control_caption`) | 20% |
| `single_name` | one emoji, training template, trained name | 10% |
| `pair` | a held-out pair, training template (placement always said) | 25% |
| `pair_template` | a held-out pair, held-out template | 15% |
| `triple` | three emoji including a held-out pair | 5% |

Which emoji is where: `scene.items` with `relation` (items[0] is `relation` items[1]).
"""


# ------------------------------------------------------------------------------------------
# Reading a dataset
# ------------------------------------------------------------------------------------------


class EmojiDataset:
    """A split of a built dataset; items are rendered on the fly.

    `ds[i]` is (128x128x3 uint8 array, caption), or (transform(array), caption) when a
    transform is given (e.g. to make a tensor). Picklable, for DataLoader workers.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        transform: Callable[[np.ndarray], Any] | None = None,
    ):
        self.root = Path(root)
        path = self.root / f"{split}.jsonl"
        if not path.is_file():
            raise InputFileError(
                f"{path} not found: build the dataset with `limner data emoji --out {root}`"
            )
        self.split = split
        self.transform = transform
        self._lines = path.read_bytes().splitlines()
        self.sprites = Sprites.load(self.root / "sprites.npz")
        meta = json.loads((self.root / "concepts.json").read_text(encoding="utf-8"))
        self.meta = {k: v for k, v in meta.items() if k != "concepts"}
        self.concepts = [Concept.from_json(c) for c in meta["concepts"]]

    def __len__(self) -> int:
        return len(self._lines)

    def record(self, i: int) -> dict[str, Any]:
        """The parsed JSON line of item i."""
        return json.loads(self._lines[i])

    def scene(self, i: int) -> Scene:
        return Scene.from_json(self.record(i)["scene"])

    def image(self, i: int) -> Image.Image:
        return render_scene(self.scene(i), self.sprites)

    def __getitem__(self, i: int) -> tuple[Any, str]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        rec = self.record(i)
        arr = np.array(render_scene(Scene.from_json(rec["scene"]), self.sprites))  # writable
        return (self.transform(arr) if self.transform else arr), rec["caption"]


def export_pngs(
    dataset_dir: str | os.PathLike[str],
    split: str,
    n: int,
    out: str | os.PathLike[str],
    *,
    start: int = 0,
) -> list[Path]:
    """Write items start..start+n-1 as PNGs (caption in a text chunk) and captions.tsv."""
    from PIL import PngImagePlugin

    ds = EmojiDataset(dataset_dir, split)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths, lines = [], []
    for i in range(start, min(start + n, len(ds))):
        rec = ds.record(i)
        info = PngImagePlugin.PngInfo()
        info.add_itxt("caption", rec["caption"])
        p = out / f"{split}-{i:06d}.png"
        render_scene(Scene.from_json(rec["scene"]), ds.sprites).save(p, pnginfo=info)
        paths.append(p)
        lines.append(f"{p.name}\t{rec['caption']}\n")
    (out / "captions.tsv").write_text("".join(lines), encoding="utf-8")
    return paths


def contact_sheet(
    dataset_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: str = "train",
    n: int = 32,
    start: int = 0,
    columns: int = 8,
    scale: int = 2,
) -> Path:
    """A grid PNG of n items, each with its caption underneath."""
    ds = EmojiDataset(dataset_dir, split)
    idx = list(range(start, min(start + n, len(ds))))
    cell = CANVAS * scale
    text_h = 64
    pad = 8
    rows = max(1, -(-len(idx) // columns))
    sheet = Image.new(
        "RGB", (columns * (cell + pad) + pad, rows * (cell + text_h + pad) + pad), "white"
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    chars = max(10, int(cell / 6.4))
    for k, i in enumerate(idx):
        x = pad + (k % columns) * (cell + pad)
        y = pad + (k // columns) * (cell + text_h + pad)
        img = ds.image(i).resize((cell, cell), Image.Resampling.NEAREST)
        sheet.paste(img, (x, y))
        lines = textwrap.wrap(f"{i}: {ds.record(i)['caption']}", chars)[:4]
        for j, line in enumerate(lines):
            draw.text((x, y + cell + 2 + 15 * j), line, fill="black", font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of `limner data emoji` (for an argparse subcommand parser)."""
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    parser.add_argument(
        "--train-size", type=int, default=200_000, help="training scenes (default 200000)"
    )
    parser.add_argument(
        "--heldout-size", type=int, default=2_000, help="held-out scenes (default 2000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--concepts",
        type=int,
        default=0,
        help=f"keep this many of the emoji (at least {MIN_CONCEPTS}), those most distinct "
        "from each other at 16x16 (default 0: all)",
    )
    parser.add_argument(
        "--font",
        type=Path,
        default=None,
        help=f"NotoColorEmoji.ttf (default: ${FONT_ENV} or the system's fonts-noto-color-emoji)",
    )
    parser.add_argument(
        "--preview", type=Path, default=None, help="also write a contact sheet PNG of 32 scenes"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the dataset from parsed arguments; LimnerError on bad input."""
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    out = build_emoji_dataset(
        args.out,
        train_size=args.train_size,
        heldout_size=args.heldout_size,
        seed=args.seed,
        font=args.font,
        concepts=args.concepts,
        progress=say,
    )
    if args.preview is not None:
        contact_sheet(out, args.preview, split="train" if args.train_size else "heldout")
        say(f"preview: {args.preview}")
    say(f"dataset: {out} ({time.perf_counter() - t0:.1f}s)")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="limner data emoji",
        description="Build the captioned emoji-scene dataset of limner's built-in model.",
    )
    add_arguments(parser)
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        return run(args)
    except LimnerError as e:
        print(f"limner: error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
