"""RNIV identity statuses: every transition allowed and refused, the evidence each needs, the history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ins import Event, IdentityStatus, StatusHistory, TransitionError
from ins.status import DOCUMENTS, allowed_transitions, apply, check_document, next_status

P, R, V, Q = IdentityStatus.PROV, IdentityStatus.RECUP, IdentityStatus.VALI, IdentityStatus.QUAL
AT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

EXPECTED = {
    (P, Event.INSI_CONFIRMED): R, (P, Event.DOCUMENT_CHECKED): V,
    (R, Event.INSI_CONFIRMED): R, (R, Event.DOCUMENT_CHECKED): Q, (R, Event.INSI_WITHDRAWN): P,
    (V, Event.INSI_CONFIRMED): Q, (V, Event.DOCUMENT_CHECKED): V, (V, Event.DOCUMENT_WITHDRAWN): P,
    (Q, Event.INSI_CONFIRMED): Q, (Q, Event.DOCUMENT_CHECKED): Q, (Q, Event.INSI_WITHDRAWN): V,
    (Q, Event.DOCUMENT_WITHDRAWN): R,
}


@pytest.mark.parametrize("status", list(IdentityStatus))
@pytest.mark.parametrize("event", list(Event))
def test_every_status_and_event(status: IdentityStatus, event: Event) -> None:
    expected = EXPECTED.get((status, event))
    if expected is None:
        with pytest.raises(TransitionError, match="to withdraw"):
            next_status(status, event)
    else:
        assert next_status(status, event) is expected


def test_allowed_transitions_are_exactly_these() -> None:
    assert allowed_transitions() == {(s, t) for (s, _), t in EXPECTED.items()}
    # never two pieces of evidence at once, never straight from provisoire to qualifiée
    assert (P, Q) not in allowed_transitions() and (Q, P) not in allowed_transitions()


def test_only_a_qualified_identity_shares_its_ins() -> None:
    assert [s for s in IdentityStatus if s.may_share_ins] == [Q]


@pytest.mark.parametrize("code", [c for c, (_, trusted) in DOCUMENTS.items() if trusted])
def test_high_trust_documents_validate(code: str) -> None:
    change = apply(P, Event.DOCUMENT_CHECKED, AT, document=code)
    assert change.after is V and change.document == code


@pytest.mark.parametrize("code", ["PC", "CM", "CC", "TC", "LE", "AN", "DC", "XX", ""])
def test_other_documents_are_refused(code: str) -> None:
    with pytest.raises(TransitionError):
        apply(P, Event.DOCUMENT_CHECKED, AT, document=code)
    with pytest.raises(TransitionError):
        check_document(code)


def test_evidence_rules() -> None:
    with pytest.raises(TransitionError, match="document type"):
        apply(P, Event.DOCUMENT_CHECKED, AT)
    with pytest.raises(TransitionError, match="reason"):
        apply(Q, Event.INSI_WITHDRAWN, AT, reason="  ")
    assert apply(Q, Event.INSI_WITHDRAWN, AT, reason="INSi no longer finds it").after is V


def test_history_keeps_changes_in_order_and_refuses_gaps() -> None:
    history = StatusHistory()
    history.append(apply(P, Event.INSI_CONFIRMED, AT))
    history.append(apply(R, Event.DOCUMENT_CHECKED, AT + timedelta(hours=1), document="CN"))
    assert history.current is Q
    with pytest.raises(TransitionError, match="cannot follow"):
        history.append(apply(V, Event.INSI_CONFIRMED, AT + timedelta(hours=2)))
    with pytest.raises(TransitionError, match="time order"):
        history.append(apply(Q, Event.INSI_CONFIRMED, AT - timedelta(hours=2)))
    forged = apply(Q, Event.INSI_CONFIRMED, AT + timedelta(hours=3))
    with pytest.raises(TransitionError, match="leads from"):
        history.append(type(forged)(Q, P, Event.INSI_CONFIRMED, forged.at))
    assert [c.after for c in history.changes] == [R, Q]


def test_status_codes() -> None:
    assert IdentityStatus.from_code("RECUP") is R
    with pytest.raises(TransitionError):
        IdentityStatus.from_code("VIDE")
