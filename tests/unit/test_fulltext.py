"""Reading ``_text`` / ``_content`` values and extracting the text of a resource (dui.fhir.search.fulltext)."""

from __future__ import annotations

import pytest

from dui.fhir.search.fulltext import Bool, QueryError, Term, fold, fts5_query, parse_query, text_row


def test_fold_removes_accents_and_ligatures_and_keeps_word_boundaries() -> None:
    assert fold("Hélène LEFÈVRE, cœur") == "helene lefevre, coeur"
    assert fold("Gae\u0308lle") == "gaelle"  # NFD input


@pytest.mark.parametrize(("value", "query"), [
    ("chute", Term(("chute",), False)),
    ("Chute NOCTURNE", Bool("AND", (Term(("chute",), False), Term(("nocturne",), False)))),
    ("chute AND nuit", Bool("AND", (Term(("chute",), False), Term(("nuit",), False)))),
    ('"chute dans la chambre"', Term(("chute", "dans", "la", "chambre"), True)),
    ("aide-soignante", Term(("aide", "soignante"), True)),
    ("toux OR fièvre nuit", Bool("OR", (Term(("toux",), False),
                                        Bool("AND", (Term(("fievre",), False), Term(("nuit",), False)))))),
    ("(toux OR fievre) nuit", Bool("AND", (Bool("OR", (Term(("toux",), False), Term(("fievre",), False))),
                                           Term(("nuit",), False)))),
    ("toux or fievre", Bool("AND", (Term(("toux",), False), Term(("or",), False), Term(("fievre",), False)))),
    ("chute ; !", Term(("chute",), False)),  # punctuation alone is no term
])
def test_queries(value: str, query: Bool | Term) -> None:
    assert parse_query(value) == query


@pytest.mark.parametrize("value", ['"chute', "(chute", "chute)", "OR chute", "chute OR", "chute AND", "()", "",
                                   "; !", " ".join(f"w{i}" for i in range(21)), "(" * 12 + "a" + ")" * 12])
def test_malformed_queries(value: str) -> None:
    with pytest.raises(QueryError):
        parse_query(value)


def test_fts5_syntax_quotes_every_token() -> None:
    assert fts5_query(parse_query('(toux OR "chute nuit") fievre')) == '(("toux"* OR "chute nuit") AND "fievre"*)'


def test_text_row_narrative_and_content() -> None:
    row = text_row(7, {
        "resourceType": "Condition", "id": "abc-123", "meta": {"versionId": "2", "source": "urn:x"},
        "text": {"status": "generated",
                 "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Escarre&#160;<b>talon</b></p></div>'},
        "subject": {"reference": "Patient/p1", "display": "Mme Hélène Lefèvre"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "399912005"}], "text": "Escarre"},
        "note": [{"text": "Pansement quotidien"}],
        "_status": {"extension": [{"url": "x", "valueString": "caché"}]},
    })
    assert row["rid"] == 7
    assert row["narrative"] == "escarre talon"
    for word in ("escarre talon", "mme helene lefevre", "pansement quotidien", "399912005"):
        assert word in row["content"], word
    for hidden in ("abc-123", "patient/p1", "snomed", "xhtml", "urn:x", "cache", "div"):
        assert hidden not in row["content"], hidden
