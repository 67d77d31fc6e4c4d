"""What a received MSSanté message carries: its CDA documents, read from its IHE XDM archives (docs/mssante.md).

The bytes are untrusted. ``mssante.parse_message`` has already refused a message over its size, part and nesting
caps; here every ``IHE_XDM.ZIP`` goes through ``mssante.read_xdm``, which refuses a hostile archive (zip-slip,
links, bombs, encryption, XML with a DTD...) with a reason fit for a log line, and the XML documents of its
subsets are what is filed (``dui.documents.inbound.file_cda``: the CDA itself is read there, safely too). Nothing
is written to disk, nothing is logged: the content is health data.
"""

from __future__ import annotations

from dataclasses import dataclass

from mssante import Incoming, XdmRefused, read_xdm

XML_TYPES = frozenset({"text/xml", "application/xml", "application/hl7-v3+xml", "application/hl7-cda+xml"})
REASON_LENGTH = 300


class Unreadable(Exception):
    """The message carries nothing that can be filed. ``reason``: one line, no health data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = one_line(reason)


@dataclass(frozen=True)
class Document:
    """A CDA of the message: its bytes and where it came from (the archive's entry id), never its content."""

    entry_id: str
    data: bytes


def cda_documents(incoming: Incoming) -> list[Document]:
    """The CDA documents of every IHE XDM archive attached, in order; ``Unreadable`` when there is no archive,
    when an archive is refused, or when the archives hold no XML document."""
    if not incoming.xdm_archives:
        kinds = "a PDF" if incoming.pdfs else "other attachments" if incoming.others else "no attachment"
        raise Unreadable(f"no IHE_XDM.ZIP archive in the message ({kinds}): nothing can be filed automatically")
    documents: list[Document] = []
    for number, archive in enumerate(incoming.xdm_archives, 1):
        try:
            package = read_xdm(archive.data)
        except XdmRefused as exc:
            raise Unreadable(f"IHE_XDM archive {number} refused: {exc.reason}") from None
        documents += [Document(d.entry_id, d.data) for d in package.documents if d.mime_type in XML_TYPES]
    if not documents:
        raise Unreadable("the IHE_XDM archive holds no CDA document (text/xml)")
    return documents


def one_line(text: str, limit: int = REASON_LENGTH) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"
