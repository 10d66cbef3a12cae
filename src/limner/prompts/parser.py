"""AUTOMATIC1111-compatible attention syntax: ``(word)``, ``[word]``, ``(word:1.3)``, ``BREAK``.

The behaviour reproduced here is that of ``parse_prompt_attention`` in A1111's
``modules/prompt_parser.py`` (stable-diffusion-webui 1.x); the implementation is our own.
Its rules, which users' prompts (and their infotexts) rely on:

* ``(x)`` multiplies the weight of ``x`` by 1.1, ``[x]`` multiplies it by ``1 / 1.1`` (a
  multiplication by the rounded reciprocal, not a division), ``(x:w)`` multiplies it by ``w``.
  Weights are built by successive multiplication when each bracket closes, innermost first,
  so ``((x))`` is ``1.1 * 1.1 == 1.2100000000000002``, not ``1.21``.
* ``(x: 1.3 )`` allows whitespace around the number; the number is ``[+-]?[.\\d]+``.
  A ``:number)`` with no ``(`` open, a ``)`` or ``]`` with nothing open, and a lone ``:``
  are plain text.
* Brackets still open at the end apply to everything after them: first all open ``(``
  (oldest first), then all open ``[``.
* ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are literal characters; a backslash before any
  other character is dropped (``\\:`` does not escape the colon).
* ``BREAK`` as a whole word (regex ``\\s*\\bBREAK\\b\\s*``, so ``a,BREAK,b`` splits too, and
  the whitespace around it is eaten) becomes the fragment ``("BREAK", -1.0)``. Inside
  brackets that -1 is multiplied like any other weight, so ``(BREAK)`` is *not* a break.
* Neighbouring fragments with equal weights are merged (empty fragments are kept and merged
  too), and an empty result becomes ``[("", 1.0)]``.
"""

from __future__ import annotations

import re

from limner.errors import InvalidRequestError

ROUND_MULTIPLIER = 1.1
# A1111 multiplies by this rounded reciprocal; dividing by 1.1 would differ in the last bit.
SQUARE_MULTIPLIER = 1 / 1.1
BREAK_TEXT = "BREAK"
BREAK_WEIGHT = -1.0

# The characters that end a run of plain text.
_SPECIAL = frozenset("\\()[]:")
# Characters a backslash makes literal; before anything else the backslash is dropped.
_ESCAPABLE = frozenset("\\()[]")
# \s and \b are Unicode-aware on str patterns, as in A1111 (so "日本BREAK" is not a break).
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")


def _explicit_weight(text: str, colon: int) -> tuple[str, int] | None:
    """Match ``:\\s*[+-]?[.\\d]+\\s*)`` at ``text[colon]``; return (number, end) or None.

    ``str.isspace``/``str.isdecimal`` are exactly what ``\\s``/``\\d`` match on str patterns.
    """
    i = colon + 1
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    start = i
    if i < n and text[i] in "+-":
        i += 1
    digits_start = i
    while i < n and (text[i] == "." or text[i].isdecimal()):
        i += 1
    if i == digits_start:
        return None
    number = text[start:i]
    while i < n and text[i].isspace():
        i += 1
    if i < n and text[i] == ")":
        return number, i + 1
    return None


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into ``(fragment, weight)`` pairs exactly as A1111 does.

    >>> parse_prompt_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    >>> parse_prompt_attention("a BREAK b")
    [('a', 1.0), ('BREAK', -1.0), ('b', 1.0)]

    Raises `InvalidRequestError` for an explicit weight that is not a number, such as
    ``(x:1.2.3)``: A1111's pattern accepts it and then fails in ``float()``.
    """
    fragments: list[list] = []  # [text, weight] pairs, mutated while brackets close
    open_round: list[int] = []  # index into fragments where each open "(" started
    open_square: list[int] = []

    def multiply_from(start: int, multiplier: float) -> None:
        for fragment in fragments[start:]:
            fragment[1] *= multiplier

    def add_plain(run: str) -> None:
        parts = _BREAK_SPLIT.split(run)
        for k, part in enumerate(parts):
            if k:
                fragments.append([BREAK_TEXT, BREAK_WEIGHT])
            fragments.append([part, 1.0])

    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char == "\\":
            # An escape is its own fragment; a backslash before anything else yields "".
            nxt = text[i + 1] if i + 1 < n else ""
            if nxt in _ESCAPABLE:
                fragments.append([nxt, 1.0])
                i += 2
            else:
                fragments.append(["", 1.0])
                i += 1
        elif char == "(":
            open_round.append(len(fragments))
            i += 1
        elif char == "[":
            open_square.append(len(fragments))
            i += 1
        elif char == ":":
            match = _explicit_weight(text, i)
            if match is None:
                add_plain(":")
                i += 1
                continue
            number, end = match
            if open_round:
                try:
                    weight = float(number)
                except ValueError:
                    raise InvalidRequestError(
                        f"prompt weight {number!r} in {text[i:end]!r} is not a number"
                    ) from None
                multiply_from(open_round.pop(), weight)
            else:
                # With no "(" open the whole ":1.3)" is text, as in A1111.
                add_plain(text[i:end])
            i = end
        elif char == ")" and open_round:
            multiply_from(open_round.pop(), ROUND_MULTIPLIER)
            i += 1
        elif char == "]" and open_square:
            multiply_from(open_square.pop(), SQUARE_MULTIPLIER)
            i += 1
        elif char in ")]":
            add_plain(char)
            i += 1
        else:
            end = i + 1
            while end < n and text[end] not in _SPECIAL:
                end += 1
            add_plain(text[i:end])
            i = end

    # Unclosed brackets: A1111 applies all round ones first, then all square ones.
    for start in open_round:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        multiply_from(start, SQUARE_MULTIPLIER)

    merged: list[tuple[str, float]] = []
    for fragment_text, weight in fragments:
        if merged and merged[-1][1] == weight:
            # Keep the first weight of the run (matters only for 0.0 == -0.0).
            merged[-1] = (merged[-1][0] + fragment_text, merged[-1][1])
        else:
            merged.append((fragment_text, float(weight)))
    return merged or [("", 1.0)]
