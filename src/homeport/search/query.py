"""User search text -> terms. User text never reaches FTS5 or tsquery syntax.

A term is a run of letters or digits (Unicode); everything else (quotes, operators, ``*``,
``:``, parentheses, NEAR, ...) only separates terms. Terms are matched as words (stemmed); the
last one also as a prefix while it is being typed (no trailing space). Records matching more
terms, and rarer ones, rank first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from homeport.kit.errors import invalid_parameter

MAX_QUERY_LENGTH = 500
MAX_TERMS = 16
# A shorter last word is taken as typed, not as a prefix (one letter would match most records).
MIN_PREFIX_LENGTH = 2

_TERM = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class SearchQuery:
    terms: tuple[str, ...]
    prefix: bool  # whether the last term also matches as a prefix

    @property
    def last(self) -> str:
        return self.terms[-1]


def parse_query(text: str, parameter: str = "q") -> SearchQuery:
    if len(text) > MAX_QUERY_LENGTH:
        raise invalid_parameter(parameter, f"{parameter} is at most {MAX_QUERY_LENGTH} characters")
    terms: list[str] = []
    for match in _TERM.finditer(text.lower()):
        if match.group() not in terms:
            terms.append(match.group())
    if not terms:
        raise invalid_parameter(parameter, f"{parameter} holds no word to search for")
    terms = terms[:MAX_TERMS]
    typing = not text[-1:].isspace() and text.lower().rstrip().endswith(terms[-1])
    return SearchQuery(tuple(terms), typing and len(terms[-1]) >= MIN_PREFIX_LENGTH)


def fts5_match(query: SearchQuery) -> str:
    """The FTS5 MATCH expression: each term a quoted string (terms hold no quote)."""
    phrases = [f'"{term}"' for term in query.terms]
    if query.prefix:
        phrases[-1] += "*"
    return " OR ".join(phrases)


def tsquery_lexemes(query: SearchQuery) -> list[str]:
    """One ``to_tsquery`` input per term: a quoted lexeme (terms hold no quote or backslash)."""
    lexemes = [f"'{term}'" for term in query.terms]
    if query.prefix:
        lexemes[-1] += ":*"
    return lexemes
