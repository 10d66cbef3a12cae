"""The evaluator and `limner eval`: targets that match the pixels, scoring rules, the
Frechet distance, a resumable trainer, and the command end to end on a tiny model.

Needs the Noto Color Emoji font (the dataset is rendered from it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from limner.cli import main
from limner.data.emoji import Background, EmojiDataset, Placed, Scene, build_emoji_dataset
from limner.errors import InputFileError, InvalidRequestError, ModelLoadError
from limner.evaluation.evaluator import (
    Detections,
    EmojiEvaluator,
    EvaluatorConfig,
    load_evaluator,
    save_evaluator,
)
from limner.evaluation.metrics import (
    FOUND_RANK,
    frechet_distance,
    relation_holds,
    score_image,
    summarise,
)
from limner.evaluation.run import EvalConfig, _kind_rates, evaluate, format_report
from limner.training.evaluator import EvaluatorTrainConfig
from limner.training.evaluator_loop import cell_targets, train_evaluator

TINY_WIDTHS = (4, 8, 8)
SOLID = Background("solid", ("blue",), ((30, 75, 215),))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("emoji") / "ds"
    return build_emoji_dataset(out, train_size=32, heldout_size=8, seed=3)


def _train(dataset: Path, run_dir: Path, steps: int) -> dict:
    cfg = EvaluatorTrainConfig(
        data=dataset,
        out=run_dir,
        steps=steps,
        batch_size=4,
        warmup=1,
        validate_every=1000,
        validation_size=4,
        checkpoint_every=2,
        precision="fp32",
        widths=TINY_WIDTHS,
    )
    return train_evaluator(cfg, progress=False)


@pytest.fixture(scope="module")
def tiny_evaluator(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("evaluator-run")
    _train(dataset, run_dir, steps=2)
    return run_dir / "final"


# -- targets and scoring ---------------------------------------------------------------


def test_cell_targets_mark_the_cells_an_emoji_covers():
    config = EvaluatorConfig(num_concepts=3)
    square = [(100, 100)] * 3  # every sprite square: the drawn box is the placed box
    scene = Scene(SOLID, (Placed(1, 48, 0, 0), Placed(2, 32, 96, 96)), "above")
    target = cell_targets(scene, square, config)
    assert target.shape == (8, 8)
    # 16-pixel cells, centres at 8, 24, 40, ...: a 48 px box at (0, 0) covers 3x3 centres
    assert (target[:3, :3] == 1).all()
    assert (target[6:, 6:] == 2).all()
    assert (target == config.background).sum() == 64 - 9 - 4


def test_a_thin_emoji_still_claims_its_centre_cell():
    config = EvaluatorConfig(num_concepts=1)
    scene = Scene(SOLID, (Placed(0, 32, 50, 50),))  # drawn 32 wide but 2 high
    target = cell_targets(scene, [(160, 10)], config)
    assert (target == 0).sum() == 1
    assert target[4, 4] == 0  # the centre (66, 66) is in cell (4, 4)


def _detections(scores: list[list[float]], centers: list[list[tuple[float, float]]]) -> Detections:
    return Detections(
        torch.tensor(scores), torch.tensor(centers, dtype=torch.float32), torch.zeros(1, 4)
    )


def test_a_pair_is_placed_only_when_both_are_found_on_their_sides():
    scene = Scene(SOLID, (Placed(0, 40, 0, 40), Placed(1, 40, 80, 40)), "left of")
    # concept 0 at x=20, concept 1 at x=100: as asked
    det = _detections([[0.9, 0.8, 0.1]], [[(20, 60), (100, 60), (60, 60)]])
    assert score_image(det, 0, scene, "pair").placed
    # the same two, swapped sides
    det = _detections([[0.9, 0.8, 0.1]], [[(100, 60), (20, 60), (60, 60)]])
    got = score_image(det, 0, scene, "pair")
    assert got.found_all and not got.placed and got.items_found == 2


def test_an_emoji_below_the_found_rank_is_not_found():
    scores = [[0.0] * 10]
    scores[0][0] = 1.0
    for k in range(1, 9):
        scores[0][k] = 0.9 - 0.01 * k  # eight others outrank concept 9
    scene = Scene(SOLID, (Placed(0, 40, 0, 40), Placed(9, 40, 80, 40)), "left of")
    centres = [[(20, 60)] * 9 + [(100, 60)]]
    got = score_image(_detections(scores, centres), 0, scene, "pair")
    assert FOUND_RANK < 9 and not got.found_all and not got.placed
    assert got.items_found == 1  # concept 0 is found, concept 9 is not
    single = score_image(_detections(scores, centres), 0, Scene(SOLID, (Placed(1, 40, 0, 0),)), "x")
    assert (single.top1, single.top5) == (False, True)


@pytest.mark.parametrize(
    "relation,a,b,holds",
    [
        ("left of", (10, 50), (90, 50), True),
        ("right of", (10, 50), (90, 50), False),
        ("above", (50, 10), (50, 90), True),
        ("below", (50, 10), (50, 90), False),
    ],
)
def test_relations(relation, a, b, holds):
    assert relation_holds(relation, a, b) is holds


def test_scene_rates_split_recognition_from_placement():
    scene = Scene(SOLID, (Placed(0, 40, 0, 40), Placed(1, 40, 80, 40)), "left of")
    # image 0: both found, as asked; image 1: both found, swapped; image 2: only concept 0
    det = _detections(
        [[0.9, 0.8] + [0.1] * 8, [0.9, 0.8] + [0.1] * 8, [0.9, 0.0] + [0.5] * 8],
        [
            [(20, 60), (100, 60)] + [(60, 60)] * 8,
            [(100, 60), (20, 60)] + [(60, 60)] * 8,
            [(20, 60)] * 10,
        ],
    )
    scores = [score_image(det, b, scene, "pair") for b in range(3)]
    rates = _kind_rates(scores)["pair"]
    assert rates["count"] == 3
    assert rates["placed"] == pytest.approx(1 / 3)
    assert rates["found"] == pytest.approx(2 / 3)
    assert rates["items_found"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_summary_separates_synonyms_and_their_controls():
    det = _detections([[0.9, 0.1], [0.1, 0.9]], [[(0, 0), (0, 0)], [(0, 0), (0, 0)]])
    scene = Scene(SOLID, (Placed(0, 40, 0, 0),))
    synonym = score_image(det, 1, scene, "single_synonym")  # wrong
    control = score_image(det, 0, scene, "single_name")  # right
    s = summarise([synonym], [control])
    assert (s.synonym_top1, s.name_top1, s.single_top1, s.pair_placed) == (0.0, 1.0, 0.0, None)


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3))
    b = rng.standard_normal((4000, 3))
    assert frechet_distance(a, b) < 0.02
    # the same set moved by (2, 0, 0): distance 4 exactly
    assert frechet_distance(a, a + np.array([2.0, 0, 0])) == pytest.approx(4.0, abs=1e-6)
    # the same set scaled by 2: covariance x4, Tr(S + 4S - 2 * 2S) = Tr(S), about 3
    expected = np.trace(np.cov(a, rowvar=False)) + 1 * (a.mean(0) ** 2).sum()
    assert frechet_distance(a, 2 * a) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError):
        frechet_distance(a, b[:, :2])


# -- files and training ----------------------------------------------------------------


def test_save_load_round_trip_in_fp16(tmp_path):
    torch.manual_seed(0)
    model = EmojiEvaluator(EvaluatorConfig(num_concepts=5, widths=TINY_WIDTHS)).eval()
    save_evaluator(model, ["a", "b", "c", "d", "e"], tmp_path / "ev")
    loaded = load_evaluator(tmp_path / "ev")
    assert loaded.concepts == ["a", "b", "c", "d", "e"]
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        want, _ = model(x)
        got, _ = loaded.model(x)
    assert torch.allclose(want, got, atol=2e-2)


def test_loading_a_folder_that_is_not_an_evaluator_says_so(tmp_path):
    with pytest.raises(ModelLoadError, match="not an evaluator folder"):
        load_evaluator(tmp_path)


def test_training_resumes_exactly(dataset, tmp_path):
    straight = tmp_path / "straight"
    _train(dataset, straight, steps=4)
    split = tmp_path / "split"
    _train(dataset, split, steps=2)
    _train(dataset, split, steps=4)  # resumes from the step-2 checkpoint
    a = load_evaluator(straight / "final").model.state_dict()
    b = load_evaluator(split / "final").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(x) for x in (split / "log.jsonl").read_text().splitlines()]
    losses = [r for r in log if "loss" in r]
    assert losses[-1]["step"] == 4 and np.isfinite(losses[-1]["loss"])
    assert any(r.get("resumed") for r in log)
    assert (split / "final" / "LICENSE-DATA.md").is_file()


def test_the_evaluator_scores_real_renders_it_was_trained_on(dataset, tmp_path):
    """A few hundred steps on 8 scenes: it must learn them (the loop really trains)."""
    cfg = EvaluatorTrainConfig(
        data=dataset,
        out=tmp_path / "fit",
        steps=150,
        batch_size=8,
        lr=5e-3,
        warmup=5,
        validate_every=1000,
        validation_size=4,
        checkpoint_every=1000,
        train_subset=8,
        widths=(8, 16, 32),
    )
    train_evaluator(cfg, progress=False)
    ev = load_evaluator(tmp_path / "fit" / "final")
    ds = EmojiDataset(dataset, "train")
    det = ev.detect([ds.image(i) for i in range(8)])
    firsts = [ds.scene(i).items[0].concept for i in range(8)]
    found = sum(det.rank_of(b, c) < 5 for b, c in enumerate(firsts))
    assert found >= 6


# -- limner eval -----------------------------------------------------------------------


def test_eval_runs_end_to_end_on_a_tiny_model(tiny_sd1, dataset, tiny_evaluator):
    cfg = EvalConfig(model=tiny_sd1, data=dataset, evaluator=tiny_evaluator, count=3, steps=2)
    report, drawn = evaluate(cfg)
    assert report.count == 3 and len(drawn) == 3
    g, r = report.generated.summary, report.real.summary
    for rate in (g.single_top1, g.single_top5, r.single_top1, r.pair_placed):
        assert rate is None or 0.0 <= rate <= 1.0
    assert report.generated.frechet is not None and report.generated.frechet >= 0
    assert report.autoencoded.summary.count == 3 and report.autoencoded.frechet >= 0
    text = format_report(report)
    assert "single emoji: top-1" in text and "VAE round trip" in text


def test_eval_with_candidates_scores_the_image_clip_ranks_first(tiny_sd1, dataset, tiny_evaluator):
    """`--candidates N`: each prompt's scored image is the one `generate --candidates N
    --keep 1` returns (the CLIP model's best of N), and the report says so."""
    from limner import api

    cfg = EvalConfig(
        model=tiny_sd1, data=dataset, evaluator=tiny_evaluator, count=2, steps=2, candidates=3
    )
    with pytest.raises(InvalidRequestError, match="at least 2 images, not 1"):
        evaluate(EvalConfig(**{**cfg.__dict__, "candidates": 1}))
    report, drawn = evaluate(cfg)
    assert report.candidates == 3 and "best of 3 by CLIP" in format_report(report)
    for i, (image, prompt) in enumerate(drawn):
        kept = api.generate(
            api.GenerationRequest(prompt=prompt, model=tiny_sd1, steps=2, seed=i, candidates=3)
        )
        assert len(kept) == 1 and kept[0].clip_score is not None
        assert np.array_equal(np.asarray(image), np.asarray(kept[0].image))


def test_the_builtin_vae_round_trip_keeps_the_renders(dataset):
    """The VAE column is the renders through the model's own VAE: the shipped VAE keeps
    them close (a random one would not), and the same seed gives the same pixels."""
    from limner import api
    from limner.data.emoji import EmojiDataset, render_scene
    from limner.evaluation.run import autoencode

    ds = EmojiDataset(dataset, "heldout")
    real = [np.asarray(render_scene(ds.scene(i), ds.sprites).convert("RGB")) for i in range(8)]
    model = api.load(None)
    pictures = [Image.fromarray(r) for r in real]
    once, again = autoencode(model, pictures, seed=0), autoencode(model, pictures, seed=0)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(once, again, strict=True)
    )
    out = [np.asarray(a, np.float32) for a in once]

    def error(a, b):
        return float(np.abs(a - b.astype(np.float32)).mean() / 255)

    own = np.mean([error(o, r) for o, r in zip(out, real, strict=True)])
    other = np.mean([error(o, r) for o, r in zip(out, real[1:] + real[:1], strict=True)])
    assert own < 0.05  # measured 0.034 here (0.028 over 16 scenes of the full held-out split)
    assert other > 3 * own  # a VAE that forgot its input would be as close to any render


def test_eval_cli_json(tiny_sd1, dataset, tiny_evaluator, capsys):
    args = ["eval", "--model", tiny_sd1, "--data", dataset, "--evaluator", tiny_evaluator]
    code = main([str(a) for a in [*args, "--count", "2", "--steps", "2", "--json"]])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    assert report["count"] == 2 and report["steps"] == 2
    assert set(report["generated"]["summary"]) >= {"single_top1", "pair_placed", "synonym_top1"}


def test_eval_runs_the_speed_modes_it_is_asked_for(tiny_sd1, dataset, tiny_evaluator, capsys):
    """The quality of a speed mode is measured by evaluating with it: the options reach
    the model, and the report says what ran."""
    args = ["eval", "--model", tiny_sd1, "--data", dataset, "--evaluator", tiny_evaluator]
    args += ["--count", "2", "--steps", "4", "--json", "--precision", "fp32"]
    assert main([str(a) for a in args]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["runtime"]["precision"] == "fp32" and plain["runtime"]["deepcache"] is None
    assert main([str(a) for a in [*args, "--deepcache", "2"]]) == 0
    cached = json.loads(capsys.readouterr().out)
    assert cached["runtime"]["deepcache"]["interval"] == 2
    # DeepCache reuses features on alternate steps: other pixels, so other features
    assert cached["generated"]["frechet"] != plain["generated"]["frechet"]
    report, _ = evaluate(
        EvalConfig(model=tiny_sd1, data=dataset, evaluator=tiny_evaluator, count=2, steps=2)
    )
    assert "runtime: " in format_report(report)


def test_eval_refuses_an_evaluator_of_other_concepts(tiny_sd1, dataset, tmp_path):
    model = EmojiEvaluator(EvaluatorConfig(num_concepts=2, widths=TINY_WIDTHS))
    save_evaluator(model, ["x", "y"], tmp_path / "other")
    cfg = EvalConfig(model=tiny_sd1, data=dataset, evaluator=tmp_path / "other", count=2)
    with pytest.raises(InputFileError, match="other concepts"):
        evaluate(cfg)


def test_eval_refuses_more_prompts_than_the_split_holds(capsys, dataset, tiny_evaluator):
    code = main(
        ["eval", "--data", str(dataset), "--evaluator", str(tiny_evaluator), "--count", "5"]
    )
    assert code == 2
    assert "held-out scenes" in capsys.readouterr().err


def test_real_only_scores_the_renders_without_a_model(dataset, tiny_evaluator, capsys):
    code = main(
        [
            "eval",
            "--real-only",
            "--data",
            str(dataset),
            "--evaluator",
            str(tiny_evaluator),
            "--count",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "real renders of 4 held-out scenes" in out and "s generating" not in out
    report, drawn = evaluate(
        EvalConfig(data=dataset, evaluator=tiny_evaluator, count=4, real_only=True)
    )
    assert report.generated is None and drawn == [] and report.real.summary.count == 4


def test_the_shipped_evaluator_recognises_held_out_renders(dataset):
    """The evaluator in the package, on real renders of held-out scenes it never saw."""
    from limner.evaluation.evaluator import builtin_evaluator_dir

    ev = load_evaluator(builtin_evaluator_dir())
    ds = EmojiDataset(dataset, "heldout")
    assert ev.concepts == [c.name for c in ds.concepts]
    det = ev.detect([ds.image(i) for i in range(len(ds))])
    scores = [score_image(det, b, ds.scene(b), ds.record(b)["kind"]) for b in range(len(ds))]
    assert sum(s.top5 for s in scores) >= 6


def test_a_dataset_of_fewer_concepts_is_judged_on_its_own_concepts(tmp_path):
    """`limner data emoji --concepts 500`: the shipped evaluator chooses among the 500
    (and the background) and still recognises their real renders."""
    from limner.evaluation.evaluator import builtin_evaluator_dir
    from limner.evaluation.run import load_checked_evaluator

    sub = build_emoji_dataset(tmp_path / "ds", train_size=0, heldout_size=40, seed=3, concepts=500)
    ds = EmojiDataset(sub, "heldout")
    full = load_evaluator(builtin_evaluator_dir())
    ev = load_checked_evaluator(None, ds)
    names = [c.name for c in ds.concepts]
    assert ev.concepts == names and len(full.concepts) > len(names)
    images = [ds.image(i) for i in range(len(ds))]
    det = ev.detect(images)
    assert det.scores.shape == (len(ds), 500)
    # concept k of the dataset is the full evaluator's output for the same name
    from limner.evaluation.evaluator import detect_from_logits, images_to_tensor

    with torch.no_grad():
        logits, feats = full.model(images_to_tensor(images[:4], full.config.input_size))
    keep = [full.concepts.index(n) for n in names] + [full.config.background]
    expected = detect_from_logits(logits[:, keep], feats, full.config.canvas)
    assert torch.allclose(det.scores[:4], expected.scores)
    singles = [i for i in range(len(ds)) if ds.record(i)["kind"] == "single"]
    scores = [score_image(det, b, ds.scene(b), ds.record(b)["kind"]) for b in singles]
    assert sum(s.top1 for s in scores) >= 0.8 * len(singles)
    with pytest.raises(KeyError):
        full.restricted_to(["not an emoji"])


# -- the text encoder's own view of held-out synonyms ------------------------------------


def _dataset_of(dataset: Path, out: Path, concepts: list[dict]) -> Path:
    """`dataset` with only these concepts in concepts.json (the probe reads no image)."""
    out.mkdir()
    for name in ("heldout.jsonl", "sprites.npz"):
        (out / name).symlink_to(Path(dataset) / name)
    meta = json.loads((Path(dataset) / "concepts.json").read_text())
    (out / "concepts.json").write_text(json.dumps({**meta, "concepts": concepts}))
    return out


def test_text_probe_retrieves_synonyms_and_names_by_their_own_captions(dataset, tmp_path, capsys):
    """Held-out synonyms retrieve their concepts far above chance but not always; a
    concept's own name as its "synonym" retrieves it always, at zero difference."""
    from limner.evaluation import text_probe

    every = json.loads((Path(dataset) / "concepts.json").read_text())["concepts"]
    with_synonyms = [c for c in every if c["heldout_synonyms"]][:30]
    others = [c for c in every if not c["heldout_synonyms"]][:30]
    small = _dataset_of(dataset, tmp_path / "small", with_synonyms + others)
    real = text_probe.probe_synonyms(small)
    assert real.concepts == 60 and real.synonyms >= 30
    assert real.context_top5 > 0.3  # chance: 5 of 60
    assert 0 <= real.context_top1 <= real.context_top5 <= 1
    assert 0 < real.synonym_diff_rms < real.context_rms

    own_names = [{**c, "heldout_synonyms": [c["name"]]} for c in with_synonyms + others]
    same = text_probe.probe_synonyms(_dataset_of(dataset, tmp_path / "own", own_names))
    assert same.synonyms == 60
    assert same.sentence_top1 == same.context_top1 == 1.0
    assert same.synonym_diff_rms == pytest.approx(0.0, abs=1e-6)
    assert same.other_diff_rms > 0

    assert text_probe.main(["--data", str(small)]) == 0
    assert json.loads(capsys.readouterr().out)["synonyms"] == real.synonyms
    assert text_probe.main(["--data", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert text_probe.main(["--data", str(small), "--template", "no slot"]) == 2
    none = _dataset_of(dataset, tmp_path / "none", others)
    with pytest.raises(InvalidRequestError, match="no held-out synonyms"):
        text_probe.probe_synonyms(none)
