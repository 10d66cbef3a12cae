"""AUTOMATIC1111-compatible prompt syntax: attention parser, 75-token chunks, emphasis."""

from __future__ import annotations

import doctest
import re

import pytest
import torch

from limner.errors import InvalidRequestError
from limner.prompts import parser
from limner.prompts.chunks import (
    TokenChunk,
    apply_emphasis,
    pad_chunk,
    pad_chunk_lists,
    split_into_chunks,
)
from limner.prompts.parser import parse_prompt_attention

# Expected weights are the exact floats A1111 produces. The first six rows are the doctest
# table in the docstring of `parse_prompt_attention` in AUTOMATIC1111/stable-diffusion-webui,
# modules/prompt_parser.py (read at commit 28bd8e142d5f77b71ae8d7d7140b5da1b3a49906); the
# other rows were derived from that function's rules and checked against its behaviour.
PARSER_CASES: list[tuple[str, list[tuple[str, float]]]] = [
    # --- A1111 docstring table ---
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
    # --- successive multiplication, not exact decimal powers ---
    ("", [("", 1.0)]),
    ("((a))", [("a", 1.2100000000000002)]),
    ("(((a)))", [("a", 1.3310000000000004)]),
    ("[a]", [("a", 0.9090909090909091)]),
    ("[[a]]", [("a", 0.8264462809917354)]),
    ("((a:1.5))", [("a", 1.6500000000000001)]),
    ("(a (b:2) c)", [("a ", 1.1), ("b", 2.2), (" c", 1.1)]),
    ("x (a) (b)", [("x ", 1.0), ("a", 1.1), (" ", 1.0), ("b", 1.1)]),
    ("( a )", [(" a ", 1.1)]),
    # --- explicit weights ---
    ("(a:1.3)", [("a", 1.3)]),
    ("(a: 1.3 )", [("a", 1.3)]),
    ("(a:+.5)", [("a", 0.5)]),
    ("(a:-1)", [("a", -1.0)]),
    ("(a:0)", [("a", 0.0)]),
    ("(a:1e2)", [("a:1e2", 1.1)]),  # no exponent syntax: ":1e2" is text inside ( )
    ("(a:b)", [("a:b", 1.1)]),
    ("a:1.3)", [("a:1.3)", 1.0)]),  # no "(" open: the weight is plain text
    ("[a:0.5]", [("a:0.5", 0.9090909090909091)]),  # [..:n] only means editing upstream
    # --- unbalanced brackets ---
    ("a) b]", [("a) b]", 1.0)]),
    ("[a", [("a", 0.9090909090909091)]),
    ("[(a", [("a", 1.0)]),
    ("([a])", [("a", 1.0)]),
    # all open "(" are applied before all open "[", so this differs from "((([a])))"
    ("((([a", [("a", 1.2100000000000004)]),
    ("((([a])))", [("a", 1.2100000000000002)]),
    # --- escapes ---
    ("\\\\", [("\\", 1.0)]),
    ("a\\b", [("ab", 1.0)]),  # a backslash before an ordinary character is dropped
    ("(a\\:2)", [("a", 2.0)]),  # ... so "\:" does not stop the colon being a weight
    ("\\(a\\)", [("(a)", 1.0)]),
    # --- BREAK ---
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("a,BREAK,b", [("a,", 1.0), ("BREAK", -1.0), (",b", 1.0)]),  # word boundary, not spaces
    ("BREAK", [("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
    (
        "a BREAK BREAK b",
        [("a", 1.0), ("BREAK", -1.0), ("", 1.0), ("BREAK", -1.0), ("b", 1.0)],
    ),
    ("a break b", [("a break b", 1.0)]),
    ("aBREAK b", [("aBREAK b", 1.0)]),
    ("BREAKING", [("BREAKING", 1.0)]),
    ("(BREAK)", [("", 1.1), ("BREAK", -1.1), ("", 1.1)]),  # multiplied: no longer a break
]


@pytest.mark.parametrize(("text", "expected"), PARSER_CASES, ids=[c[0] for c in PARSER_CASES])
def test_parse_prompt_attention_matches_a1111(text: str, expected: list[tuple[str, float]]) -> None:
    # == on floats is intended: the weights must be A1111's to the last bit.
    assert parse_prompt_attention(text) == expected


def test_parser_returns_float_weights_for_break() -> None:
    weights = [w for _, w in parse_prompt_attention("a BREAK b")]
    assert all(type(w) is float for w in weights)


@pytest.mark.parametrize("text", ["(a:1.2.3)", "(a:.)", "(a: ..)"])
def test_malformed_explicit_weight_is_a_user_error(text: str) -> None:
    # A1111's pattern accepts these and then crashes in float(); we say what is wrong.
    with pytest.raises(InvalidRequestError, match="not a number"):
        parse_prompt_attention(text)


def test_malformed_weight_without_open_bracket_is_text() -> None:
    assert parse_prompt_attention("a:1.2.3)") == [("a:1.2.3)", 1.0)]


def test_parser_docstring_examples() -> None:
    result = doctest.testmod(parser)
    assert result.attempted > 0
    assert result.failed == 0


# --- chunking -------------------------------------------------------------------------

COMMA = 5
WORD_IDS = {f"t{i}": 1000 + i for i in range(400)} | {"BREAK": 7}


def fake_tokenize(text: str) -> list[int]:
    """One token per word; a comma is its own token, like CLIP's ",</w>"."""
    return [COMMA if w == "," else WORD_IDS[w] for w in re.findall(r",|[^\s,]+", text)]


def words(start: int, stop: int) -> str:
    return " ".join(f"t{i}" for i in range(start, stop))


def ids(start: int, stop: int) -> list[int]:
    return [1000 + i for i in range(start, stop)]


def chunk_ids(prompt: str, **kwargs) -> list[list[int]]:
    chunks = split_into_chunks(parse_prompt_attention(prompt), fake_tokenize, COMMA, **kwargs)
    return [c.ids for c in chunks]


def test_empty_prompt_gives_one_empty_chunk() -> None:
    assert split_into_chunks(parse_prompt_attention(""), fake_tokenize, COMMA) == [TokenChunk()]


def test_short_prompt_keeps_weights_per_token() -> None:
    chunks = split_into_chunks(parse_prompt_attention("t0 (t1) [t2 t3]"), fake_tokenize, COMMA)
    assert chunks == [
        TokenChunk(ids(0, 4), [1.0, 1.1, 0.9090909090909091, 0.9090909090909091]),
    ]


@pytest.mark.parametrize(
    ("n_words", "sizes"), [(74, [74]), (75, [75]), (76, [75, 1]), (160, [75, 75, 10])]
)
def test_long_prompt_is_cut_every_75_tokens(n_words: int, sizes: list[int]) -> None:
    result = chunk_ids(words(0, n_words))
    assert [len(c) for c in result] == sizes
    assert sum(result, []) == ids(0, n_words)


def test_comma_backtrack_moves_words_after_last_comma() -> None:
    # 70 words, a comma at index 70, then 10 words: the 4 words after the comma that fit in
    # chunk 1 move to chunk 2 together with the rest.
    result = chunk_ids(words(0, 70) + " , " + words(70, 80))
    assert result == [ids(0, 70) + [COMMA], ids(70, 80)]


def test_comma_backtrack_moves_weights_too() -> None:
    chunks = split_into_chunks(
        parse_prompt_attention(words(0, 70) + ", (t70 t71) " + words(72, 80)),
        fake_tokenize,
        COMMA,
    )
    assert chunks[1].ids == ids(70, 80)
    assert chunks[1].weights == [1.1, 1.1] + [1.0] * 8
    assert chunks[0].weights == [1.0] * 71


@pytest.mark.parametrize(("comma_at", "backtracks"), [(55, True), (54, False)])
def test_comma_backtrack_limit_is_20_tokens(comma_at: int, backtracks: bool) -> None:
    # Full chunk of 75, comma at index i: backtrack iff 75 - i <= 20.
    result = chunk_ids(words(0, comma_at) + " , " + words(comma_at, 90))
    if backtracks:
        assert result == [ids(0, comma_at) + [COMMA], ids(comma_at, 90)]
    else:
        assert result == [ids(0, comma_at) + [COMMA] + ids(comma_at, 74), ids(74, 90)]


@pytest.mark.parametrize(
    "kwargs", [{"comma_backtrack": 0}, {"comma_backtrack": 4}], ids=["disabled", "short"]
)
def test_comma_backtrack_setting(kwargs: dict) -> None:
    # Comma at index 70 is 5 tokens from the end: a limit of 0 or 4 keeps chunk 1 full.
    result = chunk_ids(words(0, 70) + " , " + words(70, 80), **kwargs)
    assert [len(c) for c in result] == [75, 6]


def test_comma_backtrack_needs_a_comma_id() -> None:
    chunks = split_into_chunks(
        parse_prompt_attention(words(0, 70) + " , " + words(70, 80)), fake_tokenize, None
    )
    assert [len(c.ids) for c in chunks] == [75, 6]


def test_comma_arriving_at_full_chunk_starts_next_chunk_and_is_forgotten() -> None:
    result = chunk_ids(words(0, 75) + " , " + words(75, 80), comma_backtrack=74)
    assert result == [ids(0, 75), [COMMA] + ids(75, 80)]
    # Had the leading comma been remembered (index 0), a limit of 75 would cut after it.
    result = chunk_ids(words(0, 75) + " , " + words(75, 160), comma_backtrack=75)
    assert result == [ids(0, 75), [COMMA] + ids(75, 149), ids(149, 160)]


def test_break_closes_chunk() -> None:
    assert chunk_ids("t0 t1 BREAK t2") == [ids(0, 2), ids(2, 3)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("BREAK t0", [[], ids(0, 1)]),  # leading BREAK: empty first chunk
        ("BREAK BREAK t0", [[], [], ids(0, 1)]),
        ("t0 BREAK", [ids(0, 1)]),  # trailing BREAK adds nothing
        ("BREAK", [[]]),
        ("(BREAK) t0", [[7, 1000]]),  # weighted BREAK is a word
    ],
)
def test_break_edge_cases(prompt: str, expected: list[list[int]]) -> None:
    assert chunk_ids(prompt) == expected


def test_break_right_after_full_chunk_adds_no_empty_chunk() -> None:
    assert chunk_ids(words(0, 75) + " BREAK t75") == [ids(0, 75), ids(75, 76)]


def test_break_forgets_earlier_comma() -> None:
    # The comma before BREAK sits at index 60; remembered, it would be 15 (<= 20) tokens
    # from the end of the next full chunk and pull words out of it.
    result = chunk_ids(words(0, 60) + " , BREAK " + words(60, 140))
    assert result == [ids(0, 60) + [COMMA], ids(60, 135), ids(135, 140)]


def test_split_into_chunks_rejects_zero_length() -> None:
    with pytest.raises(ValueError):
        split_into_chunks([("t0", 1.0)], fake_tokenize, COMMA, chunk_length=0)


# --- padding ---------------------------------------------------------------------------

BOS, EOS, PAD = 49406, 49407, 0


def test_pad_chunk_layout() -> None:
    tokens, weights = pad_chunk(TokenChunk([11, 12], [1.1, 0.5]), BOS, EOS, PAD)
    assert tokens == [BOS, 11, 12, EOS] + [PAD] * 73
    assert weights == [1.0, 1.1, 0.5] + [1.0] * 74
    assert len(tokens) == len(weights) == 77


def test_pad_chunk_empty_is_empty_prompt() -> None:
    tokens, weights = pad_chunk(TokenChunk(), BOS, EOS, EOS)
    # SD1 (pad == eos): A1111's [bos] + [eos] * 76.
    assert tokens == [BOS] + [EOS] * 76
    assert weights == [1.0] * 77


def test_pad_chunk_full_has_no_padding() -> None:
    tokens, _ = pad_chunk(TokenChunk(ids(0, 75), [1.0] * 75), BOS, EOS, PAD)
    assert tokens == [BOS] + ids(0, 75) + [EOS]


def test_pad_chunk_rejects_overlong_chunk() -> None:
    with pytest.raises(ValueError):
        pad_chunk(TokenChunk(ids(0, 76), [1.0] * 76), BOS, EOS, PAD)


def test_pad_chunk_lists_appends_empty_chunks() -> None:
    a = [TokenChunk([1], [1.0]), TokenChunk([2], [1.0]), TokenChunk([3], [1.0])]
    b = [TokenChunk([4], [1.0])]
    padded_a, padded_b = pad_chunk_lists(a, b)
    assert padded_a == a
    assert padded_b == [TokenChunk([4], [1.0]), TokenChunk(), TokenChunk()]
    assert len(b) == 1  # input not modified
    swapped_b, swapped_a = pad_chunk_lists(b, a)
    assert (swapped_b, swapped_a) == (padded_b, padded_a)


# --- emphasis ---------------------------------------------------------------------------


def _z(batch: int = 1, tokens: int = 77, dim: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    # Offset so the mean is well away from 0 and the rescale is meaningful.
    return torch.randn(batch, tokens, dim, generator=generator) + 0.5


def test_emphasis_all_ones_is_identity() -> None:
    z = _z()
    out = apply_emphasis(z, torch.ones(1, 77))
    assert out is z


def test_emphasis_preserves_mean() -> None:
    z = _z()
    weights = torch.ones(1, 77)
    weights[0, 1:5] = torch.tensor([1.5, 0.7, 1.21, 2.0])
    out = apply_emphasis(z, weights)
    assert torch.allclose(out.mean(), z.mean(), rtol=1e-5, atol=0)
    assert not torch.allclose(out, z)


def test_emphasis_scales_weighted_token_relative_to_others() -> None:
    z = _z()
    weights = torch.ones(1, 77)
    weights[0, 3] = 1.5
    out = apply_emphasis(z, weights)
    ratio = out / z  # one common factor c, times 1.5 on token 3
    c = ratio[0, 0, 0]
    assert torch.allclose(ratio[0, 3], torch.full((8,), 1.5) * c, rtol=1e-5)
    others = torch.cat([ratio[0, :3], ratio[0, 4:]])
    assert torch.allclose(others, torch.full_like(others, c.item()), rtol=1e-5)
    assert c != 1.0


def test_emphasis_mean_is_over_whole_batch() -> None:
    # A1111 restores the mean of the whole (B, T, D) tensor with one factor, not per item.
    z = _z(batch=2)
    weights = torch.ones(2, 77)
    weights[0, 1:10] = 1.5
    out = apply_emphasis(z, weights)
    factor = z.mean() / (z * weights.unsqueeze(-1)).mean()
    assert torch.allclose(out[1], z[1] * factor, rtol=1e-5)
    assert torch.allclose(out.mean(), z.mean(), rtol=1e-5)
    # ... so the unweighted item changes although its own weights are all 1.
    assert not torch.allclose(out[1], z[1])


def test_emphasis_half_precision_keeps_dtype() -> None:
    z = _z().half()
    weights = torch.ones(1, 77)
    weights[0, 2] = 1.3
    out = apply_emphasis(z, weights)
    assert out.dtype == torch.float16
    expected = apply_emphasis(z.float(), weights)
    assert torch.allclose(out.float(), expected, rtol=1e-2, atol=1e-2)


def test_emphasis_zero_mean_after_weighting_stays_finite() -> None:
    # Weighted mean exactly 0: A1111 would divide by zero; we leave the weighted values.
    z = torch.tensor([[[1.0], [-1.0], [3.0]]])
    weights = torch.tensor([[2.0, 2.0, 0.0]])
    out = apply_emphasis(z, weights)
    assert torch.equal(out, torch.tensor([[[2.0], [-2.0], [0.0]]]))


def test_emphasis_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        apply_emphasis(_z(), torch.ones(1, 76))
