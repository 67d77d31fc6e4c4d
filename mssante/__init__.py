"""Secure health messaging (MSSanté) as a plain, typed library: IHE XDM packages, MIME messages, MDNs, and the
SMTP/IMAP transport with mutual TLS.

Modules: ``xmlsafe`` (hardened XML parsing), ``xdm`` (IHE_XDM.ZIP build and safe read), ``message`` (MIME
build/parse), ``mdn`` (RFC 8098 acknowledgements, integration codes 900-906), ``transport`` (the
``MailSender``/``MailReceiver`` protocols and their types), ``smtp`` and ``imap`` (network clients), ``memory``
(the in-memory twin), ``errors``. docs/mssante.md describes them.

No Flask, SQLAlchemy, ``dui`` or ``ins`` import: the service depends on this package, never the reverse.
"""

from mssante.errors import (
    MdnError,
    MessageError,
    MessageRefused,
    MssanteError,
    Permanent,
    Transient,
    TransportError,
    UidValidityChanged,
    UnsafeXml,
    XdmBuildError,
    XdmRefused,
)
from mssante.imap import ImapReceiver
from mssante.mdn import Disposition, IntegrationCode, build_mdn, parse_mdn
from mssante.memory import InMemoryMailbox
from mssante.message import Attachment, Incoming, MessageLimits, Outgoing, build_message, parse_message, xdm_subject
from mssante.smtp import SmtpSender
from mssante.transport import Batch, Cursor, Fetched, MailReceiver, MailSender, SendResult
from mssante.xdm import (
    Code,
    DocumentEntry,
    Sender,
    SubmissionSet,
    Subset,
    XdmFile,
    XdmLimits,
    XdmPackage,
    build_xdm,
    fill_document_slots,
    read_xdm,
)

__all__ = [
    "Attachment",
    "Batch",
    "Code",
    "Cursor",
    "Disposition",
    "DocumentEntry",
    "Fetched",
    "ImapReceiver",
    "InMemoryMailbox",
    "Incoming",
    "IntegrationCode",
    "MailReceiver",
    "MailSender",
    "MdnError",
    "MessageError",
    "MessageLimits",
    "MessageRefused",
    "MssanteError",
    "Outgoing",
    "Permanent",
    "SendResult",
    "Sender",
    "SmtpSender",
    "SubmissionSet",
    "Subset",
    "Transient",
    "TransportError",
    "UidValidityChanged",
    "UnsafeXml",
    "XdmBuildError",
    "XdmFile",
    "XdmLimits",
    "XdmPackage",
    "XdmRefused",
    "build_mdn",
    "build_message",
    "build_xdm",
    "fill_document_slots",
    "parse_mdn",
    "parse_message",
    "read_xdm",
    "xdm_subject",
]
