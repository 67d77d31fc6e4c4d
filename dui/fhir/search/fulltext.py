"""``_text`` and ``_content``: full-text search on the narrative and on the whole resource
(http://hl7.org/fhir/R4/search.html#content).

What is indexed, one row per current resource (``search_text``, written with the other index rows):

- ``narrative``: the words of ``text.div``, tags dropped (``_text``);
- ``content``: every string value of the resource, the narrative's words included (``_content``), except
  what is structure rather than text: ids, references, systems, URLs, ``meta`` and base64 data.

Both are *folded* first (``fold``): accents and ligatures removed, as ``normalize`` does for string search, but
spaces and punctuation kept so that words stay apart. The database then splits and matches words: PostgreSQL
with the ``french`` text search configuration (stemming, French stop words) on a ``tsvector``, SQLite with FTS5
(``unicode61`` tokenizer, no stemming: a word matches the words that start with it).

The value of ``_text`` / ``_content`` (``parse_query``): words, all required; ``"quoted phrases"``; ``OR``
and ``AND`` between terms (upper case); parentheses. Commas between values OR them, a repeated parameter
ANDs, as for every parameter.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from dui.fhir.search.normalize import _SPELLED_OUT

# Folded text kept per column and resource: a narrative longer than this is searched on its beginning.
MAX_TEXT = 100_000
# Terms (words and phrases) in one value; more is refused as too costly.
MAX_TERMS = 20
# Keys whose string values are structure, not text (``_content`` leaves them out).
_NOT_TEXT = frozenset({"id", "reference", "system", "url", "fullUrl", "data", "div", "meta", "resourceType",
                       "contentType", "language"})
_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits


def fold(text: str) -> str:
    """Accents and ligatures removed, case folded; other characters (spaces, punctuation) kept."""
    decomposed = unicodedata.normalize("NFKD", text).translate(_SPELLED_OUT)
    return "".join(ch for ch in decomposed.casefold() if not unicodedata.combining(ch))


class _Words(HTMLParser):
    """The character data of an XHTML fragment; every tag separates words."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        self.parts.append(" ")


def narrative_words(div: str) -> str:
    """The text of a narrative ``div``, tags dropped."""
    parser = _Words()
    try:
        parser.feed(div)
        parser.close()
    except (ValueError, AssertionError):  # not expected after structure checks; fall back to the raw text
        return html.unescape(re.sub(r"<[^>]*>", " ", div))
    return " ".join("".join(parser.parts).split())


def narrative(resource: dict[str, Any]) -> str:
    text = resource.get("text")
    div = text.get("div") if isinstance(text, dict) else None
    return narrative_words(div) if isinstance(div, str) else ""


def strings(value: Any, out: list[str]) -> None:
    """Every string value under ``value``, in document order, but the keys of ``_NOT_TEXT``."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _NOT_TEXT and not key.startswith("_"):
                strings(item, out)
    elif isinstance(value, list):
        for item in value:
            strings(item, out)


def text_row(rid: int, resource: dict[str, Any]) -> dict[str, Any]:
    """The ``search_text`` row of a resource: its folded narrative and its folded content."""
    words = narrative(resource)
    found: list[str] = [words] if words else []
    strings(resource, found)
    return {"rid": rid, "narrative": fold(words)[:MAX_TEXT], "content": fold(" ".join(found))[:MAX_TEXT]}


# -- queries --------------------------------------------------------------------------------------


class QueryError(ValueError):
    """A ``_text`` / ``_content`` value that cannot be read."""


@dataclass(frozen=True)
class Term:
    """Words that must follow each other (one word, or a phrase), folded."""

    words: tuple[str, ...]
    phrase: bool


@dataclass(frozen=True)
class Bool:
    op: str  # "AND" or "OR"
    items: tuple[Query, ...]


Query = Term | Bool

_TOKEN = re.compile(r'\s*(?:(")([^"]*)("?)|(\()|(\))|([^\s()"]+))')


def parse_query(value: str) -> Query:
    """Read a ``_text`` / ``_content`` value (see the module docstring); ``QueryError`` when malformed."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(value):
        m = _TOKEN.match(value, position)
        if m is None or m.end() == position:  # only spaces left
            break
        position = m.end()
        if m.group(1):
            if not m.group(3):
                raise QueryError("a quotation mark is not closed")
            tokens.append(("phrase", m.group(2)))
        elif m.group(4):
            tokens.append(("(", "("))
        elif m.group(5):
            tokens.append((")", ")"))
        elif m.group(6) in ("AND", "OR"):
            tokens.append((m.group(6), m.group(6)))
        elif m.group(6):
            tokens.append(("word", m.group(6)))
    parser = _QueryParser(tokens)
    query = parser.expression(0)
    if parser.position != len(tokens):
        raise QueryError("a closing parenthesis has no opening one")
    if query is None:
        raise QueryError("no word to search for")
    if parser.terms > MAX_TERMS:
        raise QueryError(f"more than {MAX_TERMS} words and phrases")
    return query


class _QueryParser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.position = 0
        self.terms = 0

    def _peek(self) -> str | None:
        return self.tokens[self.position][0] if self.position < len(self.tokens) else None

    def expression(self, depth: int) -> Query | None:
        """or := and ("OR" and)*"""
        if depth > 10:
            raise QueryError("parentheses are nested too deeply")
        items = [self._and(depth)]
        while self._peek() == "OR":
            self.position += 1
            items.append(self._and(depth))
        kept = tuple(i for i in items if i is not None)
        if len(items) > 1 and len(kept) != len(items):
            raise QueryError("OR needs a term on each side")
        return kept[0] if len(kept) == 1 else (Bool("OR", kept) if kept else None)

    def _and(self, depth: int) -> Query | None:
        """and := primary ("AND"? primary)*"""
        items: list[Query | None] = []
        while True:
            kind = self._peek()
            if kind == "AND":
                if not items or self.position + 1 >= len(self.tokens) or \
                        self.tokens[self.position + 1][0] in ("AND", "OR", ")"):
                    raise QueryError("AND needs a term on each side")
                self.position += 1
                continue
            if kind in ("word", "phrase"):
                items.append(self._term(*self.tokens[self.position]))
                self.position += 1
            elif kind == "(":
                self.position += 1
                inner = self.expression(depth + 1)
                if self._peek() != ")":
                    raise QueryError("a parenthesis is not closed")
                self.position += 1
                if inner is None:
                    raise QueryError("empty parentheses")
                items.append(inner)
            else:
                break
        kept = tuple(i for i in items if i is not None)
        if len(kept) <= 1:
            return kept[0] if kept else None
        return Bool("AND", kept)

    def _term(self, kind: str, text: str) -> Term | None:
        words = tuple(_WORD.findall(fold(text)))
        if not words:
            return None  # punctuation only: nothing to match, as the database would do
        self.terms += 1
        return Term(words, kind == "phrase" or len(words) > 1)


def fts5_query(query: Query) -> str:
    """The query in FTS5 syntax: each word a quoted token matched as a prefix, phrases exact."""
    if isinstance(query, Term):
        if query.phrase:
            return '"' + " ".join(query.words) + '"'
        return f'"{query.words[0]}"*'
    return "(" + f" {query.op} ".join(fts5_query(item) for item in query.items) + ")"
