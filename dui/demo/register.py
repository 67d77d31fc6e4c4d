"""The demo residents as the local INSi simulator's register knows them, so that the demo stays coherent with its
simulator: ``dui ins verify --all`` on the demo data confirms each INS instead of withdrawing it.

Only for development: the simulator itself is refused in ``prod``. The first ``REGISTERED`` demo residents are
registered (``dui demo load --residents`` beyond that: the others are unknown to the simulator, like a person
INSi does not find).
"""

from __future__ import annotations

from dui.demo.data import demo_person
from ins.insi.client import OID_TEST, InsiIdentity
from ins.insi.table import DEFAULT_IDENTITIES, SimulatedIdentity
from ins.insi.wire import wire_name

REGISTERED = 1000


def demo_register(count: int = REGISTERED) -> tuple[SimulatedIdentity, ...]:
    """The simulator's default identities and the first ``count`` demo residents."""
    return DEFAULT_IDENTITIES + tuple(_simulated(index) for index in range(1, count + 1))


def _simulated(index: int) -> SimulatedIdentity:
    person = demo_person(index)
    return SimulatedIdentity(f"demo-resident-{index:03d}", InsiIdentity(
        matricule=person.nir, oid=OID_TEST, birth_family=wire_name(person.family),
        given_names=tuple(wire_name(g) for g in person.given), sex="F" if person.gender == "female" else "M",
        birth_date=person.birth_date, birth_place=person.birth_place[0]))
