"""The emoji-scene dataset: determinism, held-out splits, captions that match the pixels.

Needs the Noto Color Emoji font (`apt-get install fonts-noto-color-emoji`) and the `emoji`
package; without them these tests fail and say so.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from limner.data import emoji as E
from limner.errors import InputFileError, InvalidRequestError, LimnerError

TRAIN, HELDOUT = 3000, 400


@pytest.fixture(scope="module")
def font() -> Path:
    try:
        return E.find_emoji_font()
    except LimnerError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="module")
def dataset(font: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("emoji") / "ds"
    return E.build_emoji_dataset(out, train_size=TRAIN, heldout_size=HELDOUT, seed=7)


@pytest.fixture(scope="module")
def meta(dataset: Path) -> dict:
    return json.loads((dataset / "concepts.json").read_text(encoding="utf-8"))


def _lines(dataset: Path, split: str) -> list[dict]:
    return [json.loads(x) for x in (dataset / f"{split}.jsonl").read_text("utf-8").splitlines()]


@pytest.fixture(scope="module")
def train(dataset: Path) -> list[dict]:
    return _lines(dataset, "train")


@pytest.fixture(scope="module")
def heldout(dataset: Path) -> list[dict]:
    return _lines(dataset, "heldout")


@pytest.fixture(scope="module")
def sprites(dataset: Path) -> E.Sprites:
    return E.Sprites.load(dataset / "sprites.npz")


# ------------------------------------------------------------------------------------------


def test_build_is_deterministic(dataset: Path, tmp_path: Path) -> None:
    """Same arguments -> identical bytes, also in a fresh process with another hash seed."""
    out = tmp_path / "again"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    cmd = [sys.executable, "-m", "limner.data.emoji", "--out", str(out)]
    cmd += ["--train-size", str(TRAIN), "--heldout-size", str(HELDOUT), "--seed", "7"]
    cmd += ["--preview", str(tmp_path / "preview.png")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in dataset.iterdir())
    assert names == sorted(p.name for p in out.iterdir())
    assert set(names) >= {"sprites.npz", "concepts.json", "train.jsonl", "heldout.jsonl"}
    assert {"LICENSE-DATA.md", "README.md"} <= set(names)
    for n in names:
        assert (dataset / n).read_bytes() == (out / n).read_bytes(), n
    with Image.open(tmp_path / "preview.png") as im:
        assert im.width > 1000


def test_make_scene_is_a_function_of_the_rng() -> None:
    a = [E.make_scene(random.Random(f"{s}:1"), 1000) for s in range(5)]
    b = [E.make_scene(random.Random(f"{s}:1"), 1000) for s in range(5)]
    assert a == b
    assert len({json.dumps(s.to_json()) for s in a}) == 5
    assert all(E.Scene.from_json(json.loads(json.dumps(s.to_json()))) == s for s in a)


def test_concepts(meta: dict, sprites: E.Sprites) -> None:
    concepts = meta["concepts"]
    assert len(concepts) >= 500
    assert len(sprites) == len(concepts)
    assert [c["id"] for c in concepts] == list(range(len(concepts)))
    names = [c["name"] for c in concepts]
    assert len(set(map(str.lower, names))) == len(names)
    # every phrase names exactly one concept
    phrases: dict[str, int] = {}
    for c in concepts:
        for p in [c["name"], *c["synonyms"], *c["heldout_synonyms"]]:
            k = " ".join(p.lower().replace("-", " ").split())
            assert phrases.setdefault(k, c["id"]) == c["id"], (p, c["name"])
    assert sum(len(c["heldout_synonyms"]) for c in concepts) >= 100
    assert sum(1 for c in concepts if c["synonyms"]) >= 500
    assert E.check_tables() == []
    # no flags, skin tones, ZWJ sequences or keycaps: one codepoint, a real picture
    for c in concepts:
        assert len(c["codepoints"]) == 1 and len(c["emoji"]) == 1
    for im in sprites.images:
        assert im.mode == "RGBA" and 16 <= max(im.size) <= 136
        assert np.asarray(im)[..., 3].max() == 255
    cats = {c["category"] for c in concepts}
    assert "other" not in cats and {"animal", "food", "smiley"} <= cats


def test_licence_and_readme(dataset: Path, meta: dict) -> None:
    lic = (dataset / "LICENSE-DATA.md").read_text(encoding="utf-8")
    assert "SIL OPEN FONT LICENSE Version 1.1" in lic
    assert "Redistribution and use in source and binary forms" in lic  # emoji's BSD
    assert meta["source"]["font_copyright"] and meta["source"]["font_copyright"] in lic
    readme = (dataset / "README.md").read_text(encoding="utf-8")
    assert f"| concepts (distinct emoji) | {len(meta['concepts'])} |" in readme
    assert "limner data emoji --out" in readme


def test_heldout_never_in_train(meta: dict, train: list[dict], heldout: list[dict]) -> None:
    concepts = meta["concepts"]
    held_templates = {t["id"] for t in meta["templates"] if t["heldout"]}
    held_pairs = {frozenset(p) for p in meta["heldout_pairs"]}
    held_syn = {c["id"]: set(c["heldout_synonyms"]) for c in concepts}
    all_held_syn = set().union(*held_syn.values())
    assert held_templates and len(held_pairs) == E.HELDOUT_PAIR_COUNT and all_held_syn
    seen_templates = set()
    for rec in train:
        ids = [p["id"] for p in rec["scene"]["items"]]
        assert rec["template"] not in held_templates
        assert not any(n in all_held_syn for n in rec["names"]), rec
        assert not any(
            frozenset((a, b)) in held_pairs for k, a in enumerate(ids) for b in ids[k + 1 :]
        )
        assert rec["heldout"] == {"template": False, "synonym": False, "pair": False}
        seen_templates.add(rec["template"])
    train_templates = {t["id"] for t in meta["templates"] if not t["heldout"]}
    assert seen_templates == train_templates  # every training template is used

    kinds = {r["kind"] for r in heldout}
    assert kinds == set(E.HELDOUT_KINDS)
    for rec in heldout:
        ids = [p["id"] for p in rec["scene"]["items"]]
        flags = rec["heldout"]
        assert flags["template"] == (rec["template"] in held_templates)
        used_held = [n in held_syn[i] for n, i in zip(rec["names"], ids, strict=True)]
        assert flags["synonym"] == any(used_held)
        has_pair = any(
            frozenset((a, b)) in held_pairs for k, a in enumerate(ids) for b in ids[k + 1 :]
        )
        assert flags["pair"] == has_pair
        assert any(flags.values()) or rec["kind"] == "single_name"
        if rec["kind"] == "single_synonym":
            # the control caption is the same caption with the trained name
            (cid,) = ids
            name, syn = concepts[cid]["name"], rec["names"][0]
            assert rec["control_names"] == [name]

            def norm(t: str) -> str:
                return re.sub(r"\b(?:a|an|the) ", "", t)

            swapped = re.sub(rf"\b{re.escape(syn)}\b", name, rec["caption"], count=1)
            assert norm(rec["control_caption"]) == norm(swapped)


def _centroid(scene: E.Scene, k: int, sprites: E.Sprites) -> tuple[float, float]:
    """Centre of the pixels that item k changes in the rendered scene."""
    full = np.asarray(E.render_scene(scene, sprites), dtype=np.int16)
    items = scene.items[:k] + scene.items[k + 1 :]
    without = E.Scene(scene.background, items, scene.relation)
    diff = np.abs(full - np.asarray(E.render_scene(without, sprites), dtype=np.int16))
    ys, xs = np.nonzero(diff.sum(-1) > 30)
    assert len(xs) > 20, "emoji not visible"
    return float(xs.mean()), float(ys.mean())


def _pattern(template: str, phrases: list[str]) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    out = ""
    for p in parts:
        m = re.fullmatch(r"\{e(\d)\}", p)
        if m:
            out += re.escape(phrases[int(m.group(1))])
        elif p == "{bg}":
            out += "(?: .+)?"
        elif p in ("{bgn}",):
            out += ".+"
        elif p in ("{where}", "{sized}"):
            out += ".+"
        else:
            out += re.escape(p)
    return re.compile(out)


def test_captions_name_the_emoji_on_the_right_side(
    meta: dict, train: list[dict], heldout: list[dict], sprites: E.Sprites
) -> None:
    templates = {t["id"]: t for t in meta["templates"]}
    checked = {1: 0, 2: 0, 3: 0}
    for rec in train[:400] + heldout:
        scene = E.Scene.from_json(rec["scene"])
        n = len(scene.items)
        text = rec["caption"]
        for name in rec["names"]:
            assert E.with_article(name) in text or name in text, (name, text)
        if n == 1:
            checked[1] += 1
            continue
        # the spatial order from the rendered pixels, not from the scene's own bookkeeping
        cents = [_centroid(scene, k, sprites) for k in range(n)]
        axis = 0 if scene.orientation == "h" else 1
        for a, b in zip(cents, cents[1:], strict=False):
            d_along = b[axis] - a[axis]
            d_across = b[1 - axis] - a[1 - axis]
            # items[k] is `relation` of items[k+1]: left of -> smaller x, above -> smaller y
            assert (d_along > 0) == (scene.relation in ("left of", "above")), rec
            assert abs(d_along) > abs(d_across), rec
        order = sorted(range(n), key=lambda k: cents[k][axis])
        phrases = [E.with_article(rec["names"][k]) for k in order]
        t = templates[rec["template"]]
        if t["kind"] == "2":  # "a and b": no placement said
            continue
        assert _pattern(t["text"], phrases).fullmatch(text), (text, t["text"], phrases)
        checked[n] += 1
    assert min(checked.values()) >= 20, checked


def test_background_in_caption_matches_pixels(
    train: list[dict], heldout: list[dict], sprites: E.Sprites
) -> None:
    for rec in train[:300] + heldout[:100]:
        scene = E.Scene.from_json(rec["scene"])
        bg = scene.background
        img = np.asarray(E.render_scene(scene, sprites))
        free = np.ones(img.shape[:2], bool)
        for p in scene.items:
            free[p.y : p.y + p.size, p.x : p.x + p.size] = False
        if bg.kind == "solid":
            ys, xs = np.nonzero(free)
            for y, x in list(zip(ys, xs, strict=True))[:: max(1, len(ys) // 20)]:
                assert E.nearest_palette_color(img[y, x]) == bg.colors[0]
        else:
            first, last = (0, -1)
            lines = (
                (img[first], img[last])
                if bg.direction == "vertical"
                else (
                    img[:, first],
                    img[:, last],
                )
            )
            masks = (
                (free[first], free[last])
                if bg.direction == "vertical"
                else (
                    free[:, first],
                    free[:, last],
                )
            )
            for color, line, mask in zip(bg.colors, lines, masks, strict=True):
                if mask.any():
                    assert E.nearest_palette_color(line[mask][0]) == color
        if rec["bg_in_caption"]:
            for c in bg.colors:
                assert re.search(rf"\b{c}\b", rec["caption"]), rec["caption"]
            if bg.kind == "gradient":  # the first-named colour is at the top / left
                a, b = bg.colors
                assert f"{a} to {b} gradient" in rec["caption"] or (
                    f"{a} and {b} gradient" in rec["caption"]
                ), rec["caption"]


def test_scene_layout_rules() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        s = E.make_scene(rng, 700)
        n = len(s.items)
        assert len({p.concept for p in s.items}) == n
        for p in s.items:
            assert E.MIN_SIZE <= p.size <= E.MAX_SIZE
            assert 0 <= p.x <= E.CANVAS - p.size and 0 <= p.y <= E.CANVAS - p.size
        if n == 1:
            assert s.relation is None
            continue
        assert s.relation in E.RELATIONS
        row = s.spatial_order()
        for a, b in zip(row, row[1:], strict=False):
            if s.orientation == "h":
                assert a.x + a.size <= b.x  # no overlap, left to right
                assert abs(b.center[1] - a.center[1]) <= (b.center[0] - a.center[0]) / 2
            else:
                assert a.y + a.size <= b.y
                assert abs(b.center[0] - a.center[0]) <= (b.center[1] - a.center[1]) / 2
    avoid = frozenset({frozenset((0, 1))})
    for _ in range(300):
        ids = {p.concept for p in E.make_scene(rng, 3, n_items=2, avoid_pairs=avoid).items}
        assert ids != {0, 1}


def test_dataset_reader(dataset: Path, tmp_path: Path) -> None:
    ds = E.EmojiDataset(dataset, "heldout")
    assert len(ds) == HELDOUT
    img, text = ds[0]
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert text == ds.record(0)["caption"]
    assert np.array_equal(ds[-1][0], ds[len(ds) - 1][0])
    with pytest.raises(IndexError):
        ds[len(ds)]
    again = pickle.loads(pickle.dumps(ds))  # DataLoader workers
    assert np.array_equal(again[5][0], ds[5][0])
    flip = E.EmojiDataset(dataset, "train", transform=lambda a: a[:, ::-1])
    plain = E.EmojiDataset(dataset, "train")
    assert np.array_equal(flip[3][0], plain[3][0][:, ::-1])
    with pytest.raises(InputFileError, match="limner data emoji"):
        E.EmojiDataset(tmp_path, "train")

    paths = E.export_pngs(dataset, "train", 3, tmp_path / "png")
    assert len(paths) == 3
    with Image.open(paths[1]) as im:
        assert im.size == (128, 128) and im.text["caption"] == plain.record(1)["caption"]
    tsv = (tmp_path / "png" / "captions.tsv").read_text(encoding="utf-8").splitlines()
    assert len(tsv) == 3 and tsv[0].startswith("train-000000.png\t")
    sheet = E.contact_sheet(dataset, tmp_path / "sheet.png", n=10, columns=5)
    with Image.open(sheet) as im:
        assert im.width > 5 * 256 and im.height > 2 * 256


def test_articles() -> None:
    w = E.with_article
    assert w("red apple") == "a red apple"
    assert w("orange heart") == "an orange heart"
    assert w("grapes") == "grapes"
    assert w("unicorn") == "a unicorn"
    assert w("hourglass") == "an hourglass"
    assert w("ear of corn") == "an ear of corn"
    assert w("busts in silhouette") == "busts in silhouette"
    assert w("cactus") == "a cactus"
    assert w("Statue of Liberty") == "the Statue of Liberty"
    assert w("people hugging") == "people hugging"


def test_missing_font_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="apt-get install fonts-noto-color-emoji"):
        E.find_emoji_font(tmp_path / "nope.ttf")
    monkeypatch.delenv(E.FONT_ENV, raising=False)
    monkeypatch.setattr(E, "FONT_CANDIDATES", (str(tmp_path / "missing.ttf"),))
    with pytest.raises(InputFileError, match="--font PATH"):
        E.find_emoji_font()
    bad = tmp_path / "bad.ttf"
    bad.write_bytes(b"not a font")
    with pytest.raises(InputFileError, match="colour bitmap emoji font"):
        E.build_concepts(bad)
    # the command line turns it into one line and exit code 3, no traceback
    code = E.main(["--out", str(tmp_path / "x"), "--font", str(tmp_path / "nope.ttf")])
    assert code == InputFileError.exit_code


# -- a subset of the concepts ----------------------------------------------------------


@pytest.fixture(scope="module")
def subset(font: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("emoji-subset") / "ds"
    return E.build_emoji_dataset(out, train_size=300, heldout_size=60, seed=7, concepts=500)


def _closest_pair(sprites: E.Sprites) -> float:
    f = np.stack([E._appearance(np.asarray(im)) for im in sprites.images])
    d = ((f[:, None] - f[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def test_a_subset_keeps_distinct_concepts_and_the_anchors(
    subset: Path, meta: dict, sprites: E.Sprites
) -> None:
    """`--concepts 500`: the anchors plus concepts further apart at 16x16 than the first
    500 in codepoint order, renumbered 0.. in codepoint order, the scenes drawing only them."""
    sub = json.loads((subset / "concepts.json").read_text(encoding="utf-8"))
    assert sub["concept_selection"]["count"] == 500
    assert sub["concept_selection"]["of"] == len(meta["concepts"])
    names = [c["name"] for c in sub["concepts"]]
    assert [c["id"] for c in sub["concepts"]] == list(range(500))
    assert set(E.ANCHOR_CONCEPTS) <= set(names)
    full = {c["name"]: c for c in meta["concepts"]}
    assert all(full[c["name"]]["synonyms"] == c["synonyms"] for c in sub["concepts"])
    order = [full[n]["id"] for n in names]
    assert order == sorted(order)

    chosen = E.Sprites.load(subset / "sprites.npz")
    assert len(chosen) == 500
    first = E.Sprites([np.asarray(im) for im in sprites.images[:500]])
    assert _closest_pair(chosen) > 2 * _closest_pair(first)
    for split in ("train", "heldout"):
        for rec in _lines(subset, split):
            assert all(0 <= p["id"] < 500 for p in rec["scene"]["items"])
    assert max(max(p) for p in sub["heldout_pairs"]) < 500
    assert "--concepts 500" in (subset / "README.md").read_text(encoding="utf-8")


def test_concept_selection_is_deterministic_and_bounded(font: Path) -> None:
    concepts, arrays = E.build_concepts(font)
    ids = E.select_concepts(concepts, arrays, 500)
    assert ids == E.select_concepts(concepts, arrays, 500) and len(set(ids)) == 500
    # the greedy order: a larger selection contains the smaller one
    assert set(ids) <= set(E.select_concepts(concepts, arrays, 600))
    for bad in (E.MIN_CONCEPTS - 1, len(concepts) + 1):
        with pytest.raises(InvalidRequestError, match="--concepts must be between"):
            E.select_concepts(concepts, arrays, bad)
    code = subprocess.run(
        [sys.executable, "-m", "limner.data.emoji", "--out", "/nonexistent/x", "--concepts", "-1"],
        capture_output=True,
        text=True,
    )
    assert code.returncode == 2 and "--concepts must be >= 0" in code.stderr
