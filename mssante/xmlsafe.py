"""Parsing untrusted XML (XDM METADATA.XML, CDA documents received by MSSanté).

Refused, each with an ``UnsafeXml`` message, before libxml2 reads a byte: more than ``max_bytes``; an
encoding other than UTF-8 (declared, or given away by a UTF-16/UTF-32/EBCDIC byte-order mark or NUL bytes),
so that the checks read the bytes as the parser will; a DOCTYPE or an entity declaration anywhere, hence no
DTD, no entity expansion (billion laughs, quadratic blowup) and no external entity (XXE ``file://``,
``http://``). After parsing: elements nested deeper than ``max_depth``. The parser itself never loads a
DTD, never substitutes an entity, never goes to the network and keeps libxml2's limits (``huge_tree`` off).

These are the rules the service applies to its own XML inputs; ``mssante`` has its own copy because a
library never imports the service.
"""

from __future__ import annotations

import re

from lxml import etree

from mssante.errors import UnsafeXml

MAX_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 100
_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_ENCODING = re.compile(rb"""^(?:\xef\xbb\xbf)?\s*<\?xml\b[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
_NOT_UTF8_MARKS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff", b"\x4c\x6f\xa7\x94")

__all__ = ["MAX_BYTES", "MAX_DEPTH", "UnsafeXml", "parse_untrusted"]


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True, remove_pis=True)


def parse_untrusted(data: bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> etree._Element:
    """The root element of ``data``; ``UnsafeXml`` saying what is refused."""
    if len(data) > max_bytes:
        raise UnsafeXml(f"larger than {max_bytes} bytes")
    if b"\x00" in data or data.startswith(_NOT_UTF8_MARKS):
        raise UnsafeXml("only UTF-8 XML is accepted")
    declared = _ENCODING.match(data)
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        raise UnsafeXml(f"only UTF-8 XML is accepted, not {declared.group(1).decode('ascii')}")
    if _DECLARATION.search(data):
        raise UnsafeXml("a DOCTYPE or an entity declaration is refused")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"not well-formed XML: {exc.msg}") from None
    if root.getroottree().docinfo.doctype:
        raise UnsafeXml("a DOCTYPE is refused")
    stack = [(root, 1)]
    while stack:
        node, level = stack.pop()
        if level > max_depth:
            raise UnsafeXml(f"elements are nested deeper than {max_depth} levels")
        stack.extend((child, level + 1) for child in node if isinstance(child.tag, str))
    return root
