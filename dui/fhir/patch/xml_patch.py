"""XML Patch (RFC 5261) as FHIR uses it (http://hl7.org/fhir/R4/http.html#patch): ``add``, ``replace`` and
``remove`` whose ``sel`` is an XPath 1.0 selector over the FHIR XML form of the resource.

The patch document is a ``<diff>`` (any root element) whose children are the operations, in any namespace. In
``sel``, the prefix ``f`` stands for the FHIR namespace, and every prefix the patch declares is known. A selector
must select exactly one node: an element, an attribute, a text node, or a comment (several nodes or none ->
``Unprocessable``). What RFC 5261 has and FHIR does not need is refused with a message (replacing or removing a
namespace declaration, processing instructions, the ``ws`` attribute).

``add``: ``pos`` (``before``, ``after``, ``prepend``, or appended last) places the content of the operation (text,
elements, comments); ``type="@name"`` adds an attribute, ``type="namespace::prefix"`` a namespace declaration.
``replace``: an element by the one element of the operation, a comment by its comment, an attribute value or a text
node by its text. ``remove``: the node selected (an element's tail text stays where it was).

XPath runs without the EXSLT extensions (no regular expressions); selectors and operations are bounded.
"""

from __future__ import annotations

import copy
from typing import Any

from lxml import etree

from dui.errors import Invalid, Unprocessable

FHIR_NS = "http://hl7.org/fhir"
XML_PATCH = "application/xml-patch+xml"
MAX_OPERATIONS = 1000
MAX_SELECTOR = 2000


def apply(target: etree._Element | None, patch: etree._Element) -> etree._Element:
    """A patched copy of the document whose root element is ``target``: its new root element. ``Invalid`` for a
    malformed patch, ``Unprocessable`` for one that does not apply to this document."""
    if target is None:
        raise Invalid("XML Patch: there is no target document")
    operations = [op for op in patch if isinstance(op.tag, str)]
    if not operations:
        raise Invalid("XML Patch: the patch document holds no operation (add, replace, remove)")
    if len(operations) > MAX_OPERATIONS:
        raise Invalid(f"XML Patch: more than {MAX_OPERATIONS} operations")
    root = copy.deepcopy(target)
    for op in operations:
        root = _operation(root, op)
    return root


def _operation(root: etree._Element, op: etree._Element) -> etree._Element:
    name = etree.QName(op).localname
    if name not in ("add", "replace", "remove"):
        raise Invalid(f"XML Patch: <{name}> is not an operation (add, replace, remove)")
    node = _select(root, op)
    if name == "add":
        return _add(root, node, op)
    if name == "replace":
        return _replace(root, node, op)
    return _remove(root, node, op)


def _select(root: etree._Element, op: etree._Element) -> Any:
    sel = op.get("sel")
    if not sel:
        raise Invalid(f"XML Patch: <{etree.QName(op).localname}> has no sel attribute")
    if len(sel) > MAX_SELECTOR:
        raise Invalid(f"XML Patch: the selector is longer than {MAX_SELECTOR} characters")
    namespaces = {"f": FHIR_NS, **{prefix: uri for prefix, uri in op.nsmap.items() if prefix}}
    # The context of a selector is the document node (RFC 5261 §4.1): "f:Patient/f:gender" is "/f:Patient/f:gender".
    expression = sel if sel.lstrip().startswith("/") else "/" + sel.lstrip()
    try:
        xpath = etree.XPath(expression, namespaces=namespaces, regexp=False, smart_strings=True)
        found = xpath(etree.ElementTree(root))
    except etree.XPathError as exc:
        raise Invalid(f"XML Patch: '{sel[:200]}' is not an XPath selector this server runs: {exc}") from None
    if not isinstance(found, list):
        raise Invalid(f"XML Patch: '{sel[:200]}' does not select a node")
    if not found:
        raise Unprocessable(f"XML Patch: '{sel[:200]}' selects nothing")
    if len(found) > 1:
        raise Unprocessable(f"XML Patch: '{sel[:200]}' selects {len(found)} nodes; it must select one")
    node = found[0]
    if not isinstance(node, etree._Element | etree._ElementUnicodeResult) or (
            isinstance(node, etree._ElementUnicodeResult) and node.getparent() is None):
        raise Invalid(f"XML Patch: '{sel[:200]}' selects a namespace or a value; select an element, an attribute, "
                      "a text node or a comment")
    return node


def _content(op: etree._Element) -> list[Any]:
    """The content of an operation: text (str) and copies of its element and comment children, in order."""
    nodes: list[Any] = [op.text] if op.text else []
    for child in op:
        if isinstance(child, etree._ProcessingInstruction | etree._Entity):
            raise Invalid("XML Patch: processing instructions and entities are not supported")
        node = copy.deepcopy(child)
        node.tail = None
        nodes.append(node)
        if child.tail:
            nodes.append(child.tail)
    return nodes


def _is_element(node: Any) -> bool:
    return isinstance(node, etree._Element) and not isinstance(node, etree._Comment | etree._ProcessingInstruction)


def _insert(parent: etree._Element, index: int, nodes: list[Any]) -> None:
    for node in nodes:
        if isinstance(node, str):
            if index == 0:
                parent.text = (parent.text or "") + node
            else:
                previous = parent[index - 1]
                previous.tail = (previous.tail or "") + node
        else:
            parent.insert(index, node)
            index += 1


def _add(root: etree._Element, node: Any, op: etree._Element) -> etree._Element:
    if not _is_element(node):
        raise Invalid("XML Patch: add selects an element")
    kind = op.get("type")
    if kind is not None:
        value = op.text or ""
        if kind.startswith("@"):
            try:
                node.set(kind[1:], value)
            except ValueError:
                raise Invalid(f"XML Patch: '{kind[:80]}' is not an attribute name") from None
            return root
        if kind.startswith("namespace::"):
            return _declare(root, node, kind.removeprefix("namespace::"), value)
        raise Invalid(f"XML Patch: type='{kind[:80]}' is neither an attribute (@name) nor a namespace")
    nodes = _content(op)
    pos = op.get("pos")
    if pos is None:
        _insert(node, len(node), nodes)
    elif pos == "prepend":
        _insert(node, 0, nodes)
    elif pos in ("before", "after"):
        parent = node.getparent()
        if parent is None:
            raise Unprocessable("XML Patch: nothing can be added before or after the root element")
        index = parent.index(node) + (1 if pos == "after" else 0)
        if pos == "before" and nodes and isinstance(nodes[-1], str):
            nodes = nodes[:-1]  # text just before the node would be glued to the node's predecessor: kept simple
        _insert(parent, index, nodes)
    else:
        raise Invalid(f"XML Patch: pos='{pos[:40]}' is not before, after or prepend")
    return root


def _declare(root: etree._Element, node: etree._Element, prefix: str, uri: str) -> etree._Element:
    if not prefix or not uri:
        raise Invalid("XML Patch: a namespace declaration needs a prefix and a URI")
    if node.nsmap.get(prefix) == uri:
        return root
    try:
        renewed = etree.Element(node.tag, attrib=dict(node.attrib), nsmap={**node.nsmap, prefix: uri})
    except ValueError as exc:
        raise Invalid(f"XML Patch: cannot declare the namespace prefix '{prefix[:40]}': {exc}") from None
    renewed.text, renewed.tail = node.text, node.tail
    renewed.extend(list(node))
    parent = node.getparent()
    if parent is None:
        return renewed
    parent.replace(node, renewed)
    return root


def _replace(root: etree._Element, node: Any, op: etree._Element) -> etree._Element:
    if isinstance(node, etree._ElementUnicodeResult):  # an attribute value or a text node
        parent = node.getparent()
        if node.is_attribute:
            parent.set(node.attrname, op.text or "")
        elif node.is_tail:
            parent.tail = op.text
        else:
            parent.text = op.text
        return root
    children = [c for c in _content(op) if not (isinstance(c, str) and not c.strip())]
    if len(children) != 1 or isinstance(children[0], str):
        raise Invalid("XML Patch: replace of an element or a comment takes exactly one node")
    new = children[0]
    if isinstance(node, etree._Comment) != isinstance(new, etree._Comment):
        raise Invalid("XML Patch: an element is replaced by an element, a comment by a comment")
    new.tail = node.tail
    parent = node.getparent()
    if parent is None:
        if not _is_element(new):
            raise Unprocessable("XML Patch: the root element can only be replaced by an element")
        return new
    parent.replace(node, new)
    return root


def _remove(root: etree._Element, node: Any, op: etree._Element) -> etree._Element:
    if op.get("ws") is not None:
        raise Invalid("XML Patch: the ws attribute is not supported")
    if isinstance(node, etree._ElementUnicodeResult):
        parent = node.getparent()
        if node.is_attribute:
            del parent.attrib[node.attrname]
        elif node.is_tail:
            parent.tail = None
        else:
            parent.text = None
        return root
    parent = node.getparent()
    if parent is None:
        raise Unprocessable("XML Patch: the root element cannot be removed")
    if node.tail:  # the text after the node stays
        previous = node.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + node.tail
        else:
            parent.text = (parent.text or "") + node.tail
    parent.remove(node)
    return root
