"""The in-memory twin of INSi: the simulator's table and matching rule, without network or TLS.

For tests of the service. It validates and normalises queries exactly as ``SoapInsiClient`` does
(``TraitError`` before "sending"), answers from the same table with the same rule as
``InsiSimulator`` (``ins.insi.table``), raises the same ``InsiFault`` for an identity flagged
``fault``, and answers ``slow`` identities at once. Set ``fail_with`` to make every following call
raise that error (e.g. ``InsiUnavailable`` to test "INSi unreachable"); ``calls`` records the queries.
"""

from __future__ import annotations

from collections.abc import Sequence

from ins.errors import InsiError
from ins.insi.client import InsiResult, TraitsQuery, VitaleQuery
from ins.insi.result import fault_error
from ins.insi.table import (
    DEFAULT_IDENTITIES,
    SERVICE_FAULT_DETAIL,
    SERVICE_FAULT_DETAIL_CODE,
    SERVICE_FAULT_REASON,
    SERVICE_FAULT_SUBCODE,
    Answer,
    SimulatedIdentity,
    answer_traits,
    answer_vitale,
)
from ins.insi.wire import traits_fields, vitale_fields


class MemoryInsiClient:
    """``InsiClient`` answering from a table in memory (``simulated=True`` on every result)."""

    def __init__(self, identities: Sequence[SimulatedIdentity] = DEFAULT_IDENTITIES) -> None:
        self.identities = tuple(identities)
        self.fail_with: InsiError | None = None
        self.calls: list[TraitsQuery | VitaleQuery] = []

    def search_by_traits(self, query: TraitsQuery) -> InsiResult:
        self.calls.append(query)
        fields = traits_fields(query.birth_family, query.given, query.sex, query.birth_date, query.birth_place)
        self._fail()
        return self._result(answer_traits(self.identities, fields))

    def search_by_vitale(self, query: VitaleQuery) -> InsiResult:
        self.calls.append(query)
        fields = vitale_fields(query.nir_individu, query.nir_od, query.birth_family, query.birth_date,
                               query.birth_rank)
        self._fail()
        return self._result(answer_vitale(self.identities, fields))

    def _fail(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    @staticmethod
    def _result(answer: Answer) -> InsiResult:
        entry = answer.entry
        if entry is not None and entry.behaviour == "fault":
            code = f"Receiver/{SERVICE_FAULT_SUBCODE}/{SERVICE_FAULT_DETAIL_CODE}"
            raise fault_error(code, f"{SERVICE_FAULT_REASON} ({SERVICE_FAULT_DETAIL})")
        return InsiResult(answer.code, entry.identity if entry is not None else None, simulated=True)
