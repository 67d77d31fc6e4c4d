"""FHIRPath ``matches()`` and ``replaceMatches()`` on RE2, for every expression the server evaluates.

fhirpathpy runs both on Python's ``re``, a backtracking engine: a client's ``'aaaa…!'.matches('^(a+)+$')`` then
holds the interpreter (and the GIL) for as long as the backtracking lasts, which no timeout can interrupt. RE2
runs in time linear in the text, with a bounded program and memory. A pattern RE2 cannot run (backreferences,
lookaround, possessive quantifiers) is refused with 400 naming it: never run on ``re`` instead.

Semantics kept from fhirpathpy (and FHIRPath N1): ``matches`` searches anywhere in the string, with ``.``
matching new lines too (single-line mode); ``replaceMatches`` replaces every match, and ``$1``, ``$2``... in the
substitution are the groups (empty when a group did not take part); everything else in the substitution is
literal. Differences of RE2's syntax from Python's: ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII only, and the end
of text is written ``\\z``.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import re2

from dui.errors import Invalid

MAX_PATTERN_CHARS = 1000  # FHIR patterns are short; this bounds what one pattern costs to compile and run
MAX_PATTERN_MEMORY = 1 << 21  # bytes RE2 may use for one compiled pattern (program and DFA caches)
# RE2 is linear in the text, but when its DFA gives up, a search costs up to ~5 ns per character and per
# instruction of the program (measured): (.{1,50}){1,20}c, 8,044 instructions, on 1 MB of text takes 9 s in one C
# call, which nothing can interrupt. Text length × program size is therefore capped: at most ~1 s per call.
MAX_SEARCH_WORK = 200_000_000
_GROUP = re.compile(r"\$(\d+)")  # in a substitution; linear (one class, no nesting)


class UnsupportedPattern(Invalid):
    """400: a client's regular expression RE2 cannot run, or too large to run."""


def _options(dot_nl: bool) -> re2.Options:
    options = re2.Options()
    options.max_mem = MAX_PATTERN_MEMORY
    options.log_errors = False  # refusals are answered to the client, not written to stderr
    options.dot_nl = dot_nl
    return options


_MATCHES = _options(dot_nl=True)
_REPLACE = _options(dot_nl=False)


@functools.lru_cache(maxsize=256)  # bounded: at most 256 × MAX_PATTERN_MEMORY, far less in practice
def _compile(pattern: str, dot_nl: bool) -> Any:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise UnsupportedPattern(f"The regular expression is longer than {MAX_PATTERN_CHARS} characters",
                                 code="too-costly")
    try:
        return re2.compile(pattern, _MATCHES if dot_nl else _REPLACE)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise UnsupportedPattern(
            f"The regular expression '{pattern[:120]}' cannot be run: {reason}. Patterns run on RE2: no "
            "backreferences, lookahead or lookbehind (https://github.com/google/re2/wiki/Syntax)",
            code="not-supported") from None


def compile_pattern(pattern: str, dot_nl: bool = False) -> Any:
    """The RE2 program of ``pattern`` (cached); ``UnsupportedPattern`` when RE2 cannot run it."""
    return _compile(pattern, dot_nl)


def _bounded(program: Any, pattern: str, text: str) -> Any:
    if len(text) * program.programsize > MAX_SEARCH_WORK:
        raise UnsupportedPattern(f"The regular expression '{pattern[:120]}' is too complex to run on a text of "
                                 f"{len(text)} characters; simplify it (fewer counted repetitions)", code="too-costly")
    return program


def _string(inputs: list[Any]) -> str:
    """The single string a function applies to (fhirpathpy's ``ensure_string_singleton``)."""
    if len(inputs) == 1 and isinstance(inputs[0], str):
        return inputs[0]
    raise Exception(f"Expected string, but got {inputs[:1]!r}")  # fhirpathpy's own error kind


def matches(inputs: list[Any], regex: Any) -> Any:
    """``matches(regex)``: whether the string contains a match (``.`` matches new lines)."""
    if not regex or not inputs:
        return []
    text = _string(inputs)
    return _bounded(compile_pattern(regex, dot_nl=True), regex, text).search(text) is not None


def replace_matches(inputs: list[Any], regex: Any, substitution: Any) -> Any:
    """``replaceMatches(regex, substitution)``: every match replaced; ``$n`` is group n."""
    text = _string(inputs)
    if isinstance(regex, list) or isinstance(substitution, list):
        return []
    program = _bounded(compile_pattern(regex), regex, text)
    groups = program.groups
    for number in _GROUP.findall(substitution):
        if int(number) > groups:
            raise UnsupportedPattern(f"The substitution refers to ${number}, but '{regex[:120]}' has "
                                     f"{groups} group(s)")
    pieces = _GROUP.split(substitution)  # literal, group number, literal, ...

    def expand(match: Any) -> str:
        return "".join(piece if i % 2 == 0 else (match.group(int(piece)) or "") for i, piece in enumerate(pieces))

    return program.sub(expand, text)


# The entries fhirpathpy takes in ``options["userInvocationTable"]``; they replace its own (``re``) functions.
FHIRPATH_FUNCTIONS: dict[str, dict[str, Any]] = {
    "matches": {"fn": matches, "arity": {1: ["String"]}, "nullable_input": True},
    "replaceMatches": {"fn": replace_matches, "arity": {2: ["String", "String"]}, "nullable_input": True},
}
