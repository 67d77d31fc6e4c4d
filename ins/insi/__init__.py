"""INSi téléservice client (SOAP 1.2 over mutual TLS), its local simulator, an in-memory twin and a test PKI.

The service codes against ``InsiClient``: ``SoapInsiClient`` in production, ``MemoryInsiClient`` in
tests, ``InsiSimulator`` (with ``make_pki``) to exercise the real client end to end. The wire format
and what is unconfirmed about it: ``ins.insi.wire``.
"""

from ins.insi.client import (
    OPERATION_TRAITS,
    OPERATION_VITALE,
    InsiClient,
    InsiIdentity,
    InsiResult,
    TraitsQuery,
    VitaleQuery,
)
from ins.insi.memory import MemoryInsiClient
from ins.insi.pki import Pki, make_pki
from ins.insi.simulator import InsiSimulator
from ins.insi.soap import LpsContext, SoapInsiClient
from ins.insi.table import DEFAULT_IDENTITIES, SimulatedIdentity, simulated
from ins.insi.wire import wire_name

__all__ = [
    "DEFAULT_IDENTITIES",
    "OPERATION_TRAITS",
    "OPERATION_VITALE",
    "InsiClient",
    "InsiIdentity",
    "InsiResult",
    "InsiSimulator",
    "LpsContext",
    "MemoryInsiClient",
    "Pki",
    "SimulatedIdentity",
    "SoapInsiClient",
    "TraitsQuery",
    "VitaleQuery",
    "make_pki",
    "simulated",
    "wire_name",
]
