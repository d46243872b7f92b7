"""From rust_compute's tokens to PostgreSQL full-text values, with no parsing left to chance.

A post's `tsvector` and a query's `tsquery` are both written here as
literals in which every lexeme is quoted and escaped, then cast: the text a
user typed never reaches `to_tsquery` or any parser that gives operators a
meaning, so `& | ! : * ( ) <->` in a query are just characters the
tokenizer drops. Positions come from rust_compute (docs/compute-spec.md
§12): +1 within a run, +2 across a run boundary.

Besides its tokens, a post's vector holds one *run-end marker* per CJK run:
the run's last character followed by a space (no token contains a space),
one position after the run's last token. With it:

- a lone CJK character `c` in a query matches `'c':*` (a bigram starting
  with `c`, a one-character run `c`, or the marker of a run ending in `c`),
  so every occurrence is found, not only those that start a bigram;
- a CJK run followed by more of the same chunk (`東京・京都`, `字b`) must
  end where the post's run ends, so phrases across runs stay exact.

See docs/posts.md, "Search", for the query language this implements.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nuell.compute.v1 import compute_service_pb2 as compute_pb

WORD = compute_pb.TOKEN_KIND_WORD
BIGRAM = compute_pb.TOKEN_KIND_CJK_BIGRAM
SINGLE = compute_pb.TOKEN_KIND_CJK_SINGLE

# PostgreSQL's limits: a lexeme is shorter than 2 KiB (PostgreSQL 16 refuses
# 2047 bytes, "max 2046", where 15 took them); positions above 16383 are
# stored as 16383.
LEXEME_MAX_BYTES = 2046
POSITION_MAX = 16383

QUERY_MAX_TOKENS = 32


def _quoted(lexeme: str) -> str:
    """A lexeme as a quoted tsvector/tsquery literal: quotes and backslashes escaped."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _fit(lexeme: str) -> str:
    """The longest prefix of `lexeme` PostgreSQL accepts (prefix queries still match it)."""
    encoded = lexeme.encode()
    if len(encoded) <= LEXEME_MAX_BYTES:
        return lexeme
    return encoded[:LEXEME_MAX_BYTES].decode(errors="ignore")


def _marker(term: str) -> str:
    """The run-end marker of a CJK run whose last token is `term`."""
    return term[-1] + " "


def _is_cjk(token: compute_pb.Token) -> bool:
    return token.kind in (BIGRAM, SINGLE)


def _ends_run(tokens: Sequence[compute_pb.Token], i: int) -> bool:
    """Whether the CJK token `tokens[i]` is the last of its run."""
    return i + 1 == len(tokens) or tokens[i + 1].position != tokens[i].position + 1


def tsvector_literal(tokens: Sequence[compute_pb.Token]) -> str:
    """The `tsvector` of a post, as a literal to cast: tokens and run-end markers with positions."""
    positions: dict[str, list[int]] = {}
    for i, token in enumerate(tokens):
        positions.setdefault(_fit(token.term), []).append(min(token.position, POSITION_MAX))
        if _is_cjk(token) and _ends_run(tokens, i):
            positions.setdefault(_marker(token.term), []).append(
                min(token.position + 1, POSITION_MAX)
            )
    return " ".join(
        f"{_quoted(lexeme)}:{','.join(map(str, spots))}" for lexeme, spots in positions.items()
    )


@dataclass(frozen=True, slots=True)
class Chunk:
    """One whitespace-free piece or one quoted phrase of a query, matched as a phrase."""

    text: str
    # A trailing `*`: the last word is a prefix.
    prefix: bool = False


def chunks(query: str) -> list[Chunk]:
    """The query cut into phrases: `"..."` spans (an unclosed one runs to the end) and the
    whitespace-separated pieces between them. NFKC first, so full-width quotes,
    asterisks and spaces count as their ASCII forms."""
    text = unicodedata.normalize("NFKC", query)
    pieces: list[Chunk] = []
    quoted = False
    for i, part in enumerate(text.split('"')):
        if quoted:
            if part.strip():
                pieces.append(Chunk(part))
        else:
            words = part.split()
            last_part = i == len(text.split('"')) - 1
            for j, word in enumerate(words):
                ends_query = last_part and j == len(words) - 1
                pieces.append(Chunk(word, prefix=ends_query and word.endswith("*")))
        quoted = not quoted
    return pieces


def _item(lexeme: str, *, prefix: bool = False) -> str:
    return _quoted(lexeme) + (":*" if prefix else "")


def _phrase(tokens: Sequence[compute_pb.Token], prefix_last: bool) -> str:
    """One chunk's tokens as a tsquery phrase (module docstring for the CJK rules)."""
    items: list[tuple[str, int]] = []  # (tsquery item, position)
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
        has_next = i < last
        if token.kind == SINGLE:
            if i > 0 and has_next:
                items.append((_item(token.term), token.position))  # a one-character run
            elif has_next:
                items.append((_item(_marker(token.term)), token.position + 1))  # ends a run
            else:
                items.append((_item(token.term, prefix=True), token.position))  # starts one
        elif token.kind == BIGRAM:
            items.append((_item(token.term), token.position))
            if has_next and _ends_run(tokens, i):
                # The run ends here in the post too, not inside a longer run.
                items.append((_item(_marker(token.term)), token.position + 1))
        else:
            items.append((_item(token.term, prefix=prefix_last and i == last), token.position))
    out = items[0][0]
    for (_, before), (item, position) in itertools.pairwise(items):
        distance = position - before
        out += f" {'<->' if distance == 1 else f'<{distance}>'} {item}"
    return f"({out})" if len(items) > 1 else out


def tsquery_literal(phrases: Iterable[tuple[Sequence[compute_pb.Token], bool]]) -> str:
    """Every phrase must match: `(a <-> b) & c:*`. Each entry is (tokens, prefix_last)."""
    return " & ".join(_phrase(tokens, prefix) for tokens, prefix in phrases if tokens)
