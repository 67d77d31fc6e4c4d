"""IHE XDM, "Distribute Document Set on Media" (IHE ITI TF-1 §16, ITI TF-2b §3.32), as the zip MSSanté carries.

Layout (IHE ITI TF-1 §16, ITI-32)::

    IHE_XDM.ZIP
    ├── INDEX.HTM                  links to the documents, for a person opening the zip
    ├── README.TXT                 the sending application and its vendor
    └── IHE_XDM/
        └── SUBSET01/              one folder per submission set
            ├── METADATA.XML       ebRIM lcm:SubmitObjectsRequest (SubmissionSet, DocumentEntries, Associations)
            ├── DOC0001.XML        the CDA (ISO 9660 8.3 upper-case names)
            └── DOC0002.PDF        e.g. a rendered copy

Each DocumentEntry (``rim:ExtrinsicObject``) of METADATA.XML names its file in the ``URI`` slot, relative to
the subset folder, and gives its SHA-1 (``hash``, hex) and ``size``; they must match the file.

``build_xdm`` writes such an archive from files and a METADATA.XML made by the caller (``fill_document_slots``
sets the URI/hash/size slots for it); before returning, it reads its own output back with ``read_xdm``, so that
an archive this module builds is always one it accepts. ``read_xdm`` reads an untrusted archive in memory,
never on disk, and refuses it with ``XdmRefused(reason)`` at the first rule broken (docs/mssante.md lists them).
"""

from __future__ import annotations

import hashlib
import html
import io
import itertools
import re
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lxml import etree

from mssante.errors import UnsafeXml, XdmBuildError, XdmRefused
from mssante.xmlsafe import parse_untrusted

ARCHIVE_NAME = "IHE_XDM.ZIP"
INDEX = "INDEX.HTM"
README = "README.TXT"
XDM_FOLDER = "IHE_XDM"
METADATA = "METADATA.XML"
DEFAULT_SUBSET = "SUBSET01"

NS_LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
NS_RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
_RIM = f"{{{NS_RIM}}}"

# ITI TF-3 Table 4.2.5-1 (classification and identification schemes).
DE_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"

_SHORT_NAME = re.compile(r"^[A-Z0-9_]{1,8}(\.[A-Z0-9_]{1,3})?$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_DRIVE = re.compile(r"^[A-Za-z]:")
_LONG_URI_PART = re.compile(r"^(\d+)\|(.*)$", re.DOTALL)
_XML_TYPES = frozenset({"text/xml", "application/xml", "application/hl7-v3+xml", "application/hl7-cda+xml"})
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_LOCAL_HEADER = b"PK\x03\x04"
_LOCAL_HEADER_SIZE = 30
_DATA_DESCRIPTOR_MIN = 12
_ENCRYPTED = 0x0001
_STRONG_ENCRYPTION = 0x0040
_DATA_DESCRIPTOR = 0x0008
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class XdmLimits:
    """What ``read_xdm`` accepts. The ratio is checked on entries declaring more than ``ratio_floor`` bytes."""

    max_archive_bytes: int = 30 * 1024 * 1024
    max_entries: int = 64
    max_entry_bytes: int = 20 * 1024 * 1024
    max_total_bytes: int = 50 * 1024 * 1024
    max_ratio: int = 100
    ratio_floor: int = 256 * 1024
    max_metadata_bytes: int = 5 * 1024 * 1024
    max_path_depth: int = 5


@dataclass(frozen=True)
class Code:
    """A coded value of the metadata: ``code`` (nodeRepresentation), ``scheme`` (codingScheme), ``display``."""

    code: str
    scheme: str
    display: str = ""


@dataclass(frozen=True)
class DocumentEntry:
    """One ``rim:ExtrinsicObject`` as read, with the bytes of the file its URI names (hash and size checked).

    ``patient_id`` is the CX as written (``<INS>^^^&<OID>&ISO``); ``author_institutions`` the XON values.
    """

    entry_id: str
    unique_id: str
    patient_id: str
    mime_type: str
    uri: str
    hash: str
    size: int
    title: str
    creation_time: str
    type_code: Code | None
    class_code: Code | None
    format_code: Code | None
    confidentiality_codes: tuple[Code, ...]
    author_institutions: tuple[str, ...]
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class SubmissionSet:
    """The ``rim:RegistryPackage`` classified as the SubmissionSet of a subset."""

    entry_id: str
    unique_id: str
    source_id: str
    patient_id: str
    submission_time: str
    title: str
    content_type_code: Code | None
    author_institutions: tuple[str, ...]


@dataclass(frozen=True)
class Subset:
    """One ``IHE_XDM/<folder>``: its submission set, its documents and its METADATA.XML as read."""

    folder: str
    submission_set: SubmissionSet
    documents: tuple[DocumentEntry, ...]
    metadata: bytes = field(repr=False)


@dataclass(frozen=True)
class XdmPackage:
    """A read archive: its subsets, and the bytes of every file by its name in the zip."""

    subsets: tuple[Subset, ...]
    files: Mapping[str, bytes] = field(repr=False)

    @property
    def documents(self) -> tuple[DocumentEntry, ...]:
        return tuple(d for s in self.subsets for d in s.documents)


@dataclass(frozen=True)
class XdmFile:
    """A file of the subset to build: an 8.3 upper-case ``name`` (``DOC0001.XML``), its bytes, and the link text
    of INDEX.HTM (the name when empty)."""

    name: str
    data: bytes = field(repr=False)
    title: str = ""


@dataclass(frozen=True)
class Sender:
    """Who made the archive, for README.TXT (ITI TF-1 §16: the sending application and its vendor)."""

    application: str
    version: str
    vendor: str
    contact: str = ""


# ----------------------------------------------------------------------------------------------------------------
# Building


def build_xdm(files: Sequence[XdmFile], metadata: bytes | Callable[[Sequence[XdmFile]], bytes], sender: Sender,
              *, subset: str = DEFAULT_SUBSET, limits: XdmLimits = XdmLimits()) -> bytes:
    """The ``IHE_XDM.ZIP`` bytes of one subset holding ``files`` and ``metadata``.

    ``metadata`` is the METADATA.XML (an ``lcm:SubmitObjectsRequest``), or a function of the files that makes it.
    Every ExtrinsicObject must name one of ``files`` in its URI slot, with the matching hash and size slots
    (``fill_document_slots`` sets them). Raises ``XdmBuildError`` saying what does not match.
    """
    if not _SHORT_NAME.match(subset):
        raise XdmBuildError("the subset folder must be an 8.3 upper-case name such as SUBSET01")
    _check_names(files)
    content = metadata(files) if callable(metadata) else metadata
    folder = f"{XDM_FOLDER}/{subset}"
    by_name = {f"{folder}/{f.name}".lower(): (f"{folder}/{f.name}", f.data) for f in files}
    try:
        _read_subset(folder, content, by_name, limits)
    except XdmRefused as exc:
        raise XdmBuildError(f"METADATA.XML does not match the files: {exc.reason}") from None
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        _write(archive, INDEX, _index_html(folder, files, sender))
        _write(archive, README, _readme(sender, files))
        _write(archive, f"{XDM_FOLDER}/", b"")
        _write(archive, f"{folder}/", b"")
        _write(archive, f"{folder}/{METADATA}", content)
        for f in files:
            _write(archive, f"{folder}/{f.name}", f.data)
    data = out.getvalue()
    try:
        read_xdm(data, limits=limits)
    except XdmRefused as exc:
        raise XdmBuildError(f"the archive built is not one the reader accepts: {exc.reason}") from None
    return data


def fill_document_slots(metadata: bytes, documents: Mapping[str, XdmFile]) -> bytes:
    """``metadata`` (an ``lcm:SubmitObjectsRequest``) with the ``URI``, ``hash`` (SHA-1, hex) and ``size`` slots of
    some ExtrinsicObjects set, replacing any already there.

    ``documents`` maps an ExtrinsicObject, given by its ``id`` or by its uniqueId, to the file it describes.
    Raises ``XdmBuildError`` when a key names no ExtrinsicObject, or several.
    """
    try:
        root = parse_untrusted(metadata)
    except UnsafeXml as exc:
        raise XdmBuildError(f"METADATA.XML: {exc}") from None
    identifiers = _external_ids(root)
    objects = [(o, identifiers.get((o.get("id", ""), DE_UNIQUE_ID), "")) for o in root.iter(f"{_RIM}ExtrinsicObject")]
    for key, document in documents.items():
        matches = [o for o, unique_id in objects if key in (o.get("id"), unique_id)]
        if len(matches) != 1:
            raise XdmBuildError(f"{len(matches)} ExtrinsicObject(s) have the id or uniqueId {key!r}, not one")
        target = matches[0]
        _set_slot(target, "URI", document.name)
        _set_slot(target, "hash", hashlib.sha1(document.data).hexdigest())
        _set_slot(target, "size", str(len(document.data)))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _check_names(files: Sequence[XdmFile]) -> None:
    seen: set[str] = set()
    for f in files:
        if not _SHORT_NAME.match(f.name):
            raise XdmBuildError(f"{f.name!r}: file names are 8.3 upper case (DOC0001.XML)")
        if f.name == METADATA:
            raise XdmBuildError("METADATA.XML is written from the metadata, not given as a file")
        if f.name in seen:
            raise XdmBuildError(f"{f.name}: given twice")
        seen.add(f.name)
    if not files:
        raise XdmBuildError("an XDM subset needs at least one document")


def _set_slot(target: etree._Element, name: str, value: str) -> None:
    for slot in target.findall(f"{_RIM}Slot"):
        if slot.get("name") == name:
            target.remove(slot)
    slots = target.findall(f"{_RIM}Slot")
    slot = etree.Element(f"{_RIM}Slot", name=name)
    etree.SubElement(etree.SubElement(slot, f"{_RIM}ValueList"), f"{_RIM}Value").text = value
    # ebRIM puts the slots first, before Name, Description, Classification...
    target.insert(target.index(slots[-1]) + 1 if slots else 0, slot)


def _write(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_STORED if name.endswith("/") else zipfile.ZIP_DEFLATED
    info.external_attr = ((0o40755 if name.endswith("/") else 0o100644) << 16) | (0x10 if name.endswith("/") else 0)
    archive.writestr(info, data)


def _index_html(folder: str, files: Sequence[XdmFile], sender: Sender) -> bytes:
    links = "\n".join(f'<li><a href="{html.escape(folder)}/{html.escape(f.name)}">{html.escape(f.title or f.name)}'
                      f"</a></li>" for f in files)
    return (
        '<!DOCTYPE html>\n<html lang="fr">\n<head><meta charset="utf-8"><title>IHE XDM</title></head>\n<body>\n'
        f"<h1>Documents</h1>\n<ul>\n{links}\n</ul>\n"
        f'<p>Envoyé par {html.escape(sender.application)} {html.escape(sender.version)} '
        f'({html.escape(sender.vendor)}). <a href="{README}">README.TXT</a></p>\n</body>\n</html>\n'
    ).encode()


def _readme(sender: Sender, files: Sequence[XdmFile]) -> bytes:
    lines = [
        "IHE XDM (ITI-32) - Distribute Document Set on Media",
        f"Application: {sender.application} {sender.version}",
        f"Editeur: {sender.vendor}",
    ]
    if sender.contact:
        lines.append(f"Contact: {sender.contact}")
    lines += ["", "Contenu:", f"  {INDEX}: index des documents", f"  {XDM_FOLDER}/: un dossier par lot de soumission"]
    lines += [f"  {f.name}" for f in files]
    return ("\r\n".join(lines) + "\r\n").encode()


# ----------------------------------------------------------------------------------------------------------------
# Reading


def read_xdm(archive: bytes, *, limits: XdmLimits = XdmLimits()) -> XdmPackage:
    """The subsets, documents and files of an untrusted XDM zip, read in memory.

    Raises ``XdmRefused`` with the first rule the archive breaks: its size, the entry count, an entry's name
    (absolute, ``..``, backslash, drive letter, characters, depth), type (symbolic link...), encryption,
    compression method, declared size or ratio, duplicate or overlapping entries, the total size, more data
    than declared or a bad CRC, a nested archive, no ``IHE_XDM/<subset>/METADATA.XML``, unsafe XML, or
    metadata that does not match the files.
    """
    if len(archive) > limits.max_archive_bytes:
        raise XdmRefused(f"the archive is larger than {limits.max_archive_bytes} bytes")
    try:
        zf = zipfile.ZipFile(io.BytesIO(archive))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, OverflowError,
            struct.error, EOFError):
        raise XdmRefused("not a readable zip archive") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise XdmRefused(f"{len(infos)} entries, more than {limits.max_entries}")
        for number, info in enumerate(infos, 1):
            _check_entry(number, info, limits)
        _check_duplicates(infos)
        _check_extents(archive, infos, getattr(zf, "start_dir", len(archive)))
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_total_bytes:
            raise XdmRefused(f"the entries declare {declared} bytes in all, more than {limits.max_total_bytes}")
        files = _read_files(zf, infos, limits)
    by_name = {name.lower(): (name, data) for name, data in files.items()}
    folders = sorted(name.rsplit("/", 1)[0] for name in files
                     if name.count("/") == 2 and name.startswith(f"{XDM_FOLDER}/") and name.endswith(f"/{METADATA}"))
    if not folders:
        raise XdmRefused(f"not an XDM archive: no {XDM_FOLDER}/<subset>/{METADATA}")
    subsets = tuple(_read_subset(folder, files[f"{folder}/{METADATA}"], by_name, limits) for folder in folders)
    return XdmPackage(subsets=subsets, files=files)


def _name_problem(name: str, limits: XdmLimits) -> str | None:
    """Why ``name`` (a zip entry name or a URI) is refused, or None. Never echoes the name itself."""
    if not name:
        return "an empty name"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "control characters in a name"
    if "\\" in name:
        return "a backslash in a name"
    if name.startswith("/"):
        return "an absolute path"
    if _DRIVE.match(name):
        return "a drive letter in a name"
    segments = name.split("/")
    if any(s in ("..", ".") for s in segments):
        return "a '..' or '.' path segment"
    if any(not s for s in segments):
        return "an empty path segment"
    if not all(_SEGMENT.match(s) for s in segments):
        return "a name with characters outside A-Z a-z 0-9 _ . - (or a segment over 64 characters)"
    if len(segments) > limits.max_path_depth:
        return f"a path deeper than {limits.max_path_depth} levels"
    return None


def _check_entry(number: int, info: zipfile.ZipInfo, limits: XdmLimits) -> None:
    is_dir = info.filename.endswith("/")
    problem = _name_problem(info.filename[:-1] if is_dir else info.filename, limits)
    if problem:
        raise XdmRefused(f"entry {number}: {problem}")
    where = info.filename
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise XdmRefused(f"{where}: a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise XdmRefused(f"{where}: not a regular file")
    if info.flag_bits & (_ENCRYPTED | _STRONG_ENCRYPTION):
        raise XdmRefused(f"{where}: an encrypted entry")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise XdmRefused(f"{where}: compression method {info.compress_type} (only stored and deflated)")
    if is_dir and info.file_size:
        raise XdmRefused(f"{where}: a folder entry with data")
    if info.file_size > limits.max_entry_bytes:
        raise XdmRefused(f"{where}: declares {info.file_size} bytes, more than {limits.max_entry_bytes}")
    if info.file_size > limits.ratio_floor and (
            info.compress_size == 0 or info.file_size / info.compress_size > limits.max_ratio):
        raise XdmRefused(f"{where}: compression ratio above {limits.max_ratio}")


def _check_duplicates(infos: Iterable[zipfile.ZipInfo]) -> None:
    seen: set[str] = set()
    for info in infos:
        key = info.filename.rstrip("/").lower()
        if key in seen:
            raise XdmRefused(f"{info.filename}: the name appears twice (letter case ignored)")
        seen.add(key)


def _check_extents(archive: bytes, infos: Iterable[zipfile.ZipInfo], central_directory: int) -> None:
    """Each entry's local header and data lie inside the archive, before the central directory, and no two
    overlap (the "overlapping entries" bomb, CVE-2024-0450, which this Python's zipfile does not check)."""
    spans: list[tuple[int, int, str]] = []
    for info in infos:
        start = info.header_offset
        header = archive[start:start + _LOCAL_HEADER_SIZE]
        if start < 0 or len(header) < _LOCAL_HEADER_SIZE or not header.startswith(_LOCAL_HEADER):
            raise XdmRefused(f"{info.filename}: no local header where the central directory says")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        end = start + _LOCAL_HEADER_SIZE + name_length + extra_length + info.compress_size
        if info.flag_bits & _DATA_DESCRIPTOR:
            end += _DATA_DESCRIPTOR_MIN
        spans.append((start, end, info.filename))
    spans.sort()
    for (_, end, name), (start, _, other) in itertools.pairwise(spans):
        if start < end:
            raise XdmRefused(f"{other}: overlaps the entry {name}")
    if spans and spans[-1][1] > central_directory:
        raise XdmRefused(f"{spans[-1][2]}: runs into the central directory")


def _read_files(zf: zipfile.ZipFile, infos: Iterable[zipfile.ZipInfo], limits: XdmLimits) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    for info in infos:
        if info.filename.endswith("/"):
            continue
        chunks: list[bytes] = []
        got = 0
        try:
            with zf.open(info) as stream:
                while chunk := stream.read(_CHUNK):
                    got += len(chunk)
                    total += len(chunk)
                    if got > info.file_size:
                        raise XdmRefused(f"{info.filename}: more data than its declared size")
                    if total > limits.max_total_bytes:
                        raise XdmRefused(f"more than {limits.max_total_bytes} bytes once decompressed")
                    chunks.append(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
            raise XdmRefused(f"{info.filename}: corrupt entry ({_zip_error(exc)})") from None
        data = b"".join(chunks)
        if len(data) != info.file_size:
            raise XdmRefused(f"{info.filename}: {len(data)} bytes, not the {info.file_size} declared")
        if data.startswith(_ZIP_MAGIC):
            raise XdmRefused(f"{info.filename}: a nested archive")
        files[info.filename] = data
    return files


def _zip_error(exc: Exception) -> str:
    text = str(exc)
    if "CRC" in text:
        return "bad CRC-32"
    if "differ" in text:
        return "its local header names another file"
    return type(exc).__name__


# ----------------------------------------------------------------------------------------------------------------
# METADATA.XML


def _read_subset(folder: str, metadata: bytes, by_name: Mapping[str, tuple[str, bytes]],
                 limits: XdmLimits) -> Subset:
    """The subset in ``folder``, its METADATA.XML checked against the files (``by_name``: lower-case full name →
    (name, bytes))."""
    where = f"{folder}/{METADATA}"
    try:
        root = parse_untrusted(metadata, max_bytes=limits.max_metadata_bytes)
    except UnsafeXml as exc:
        raise XdmRefused(f"{where}: {exc}") from None
    if root.tag != f"{{{NS_LCM}}}SubmitObjectsRequest":
        raise XdmRefused(f"{where}: the root is not an lcm:SubmitObjectsRequest")
    classifications = _classifications(root)
    identifiers = _external_ids(root)
    submission = _submission_set(where, root, classifications, identifiers)
    documents = tuple(_document(where, folder, obj, classifications, identifiers, by_name, limits)
                      for obj in root.iter(f"{_RIM}ExtrinsicObject"))
    if not documents:
        raise XdmRefused(f"{where}: no DocumentEntry (rim:ExtrinsicObject)")
    if any(d.patient_id != submission.patient_id for d in documents):
        raise XdmRefused(f"{where}: a DocumentEntry's patientId is not the SubmissionSet's")
    return Subset(folder=folder, submission_set=submission, documents=documents, metadata=metadata)


Classified = dict[str, list[etree._Element]]


def _classifications(root: etree._Element) -> Classified:
    """Every rim:Classification by the object it classifies (nested or at the top of the list)."""
    found: Classified = {}
    for node in root.iter(f"{_RIM}Classification"):
        parent = node.getparent()
        target = node.get("classifiedObject") or (parent.get("id", "") if parent is not None else "")
        found.setdefault(target, []).append(node)
    return found


def _external_ids(root: etree._Element) -> dict[tuple[str, str], str]:
    """(registryObject, identificationScheme) → value, for every rim:ExternalIdentifier."""
    found: dict[tuple[str, str], str] = {}
    for node in root.iter(f"{_RIM}ExternalIdentifier"):
        parent = node.getparent()
        target = node.get("registryObject") or (parent.get("id", "") if parent is not None else "")
        found.setdefault((target, node.get("identificationScheme", "")), node.get("value", ""))
    return found


def _slot_values(obj: etree._Element, name: str) -> list[str]:
    for slot in obj.findall(f"{_RIM}Slot"):
        if slot.get("name") == name:
            return [(v.text or "").strip() for v in slot.findall(f"{_RIM}ValueList/{_RIM}Value")]
    return []


def _slot(obj: etree._Element, name: str) -> str:
    values = _slot_values(obj, name)
    return values[0] if values else ""


def _uri(obj: etree._Element) -> str:
    """The URI slot; a long URI split as ``1|...``, ``2|...`` (ITI TF-3 §4.2.3.2.24) is put back together."""
    values = _slot_values(obj, "URI")
    parts = [_LONG_URI_PART.match(v) for v in values]
    if len(values) > 1 and all(parts):
        return "".join(p.group(2) for p in sorted((p for p in parts if p), key=lambda p: int(p.group(1))))
    return values[0] if values else ""


def _name_of(obj: etree._Element) -> str:
    node = obj.find(f"{_RIM}Name/{_RIM}LocalizedString")
    return node.get("value", "") if node is not None else ""


def _code(node: etree._Element) -> Code:
    return Code(code=node.get("nodeRepresentation", ""), scheme=_slot(node, "codingScheme"), display=_name_of(node))


def _codes(classifications: Classified, target: str, scheme: str) -> list[Code]:
    return [_code(c) for c in classifications.get(target, []) if c.get("classificationScheme") == scheme]


def _institutions(classifications: Classified, target: str, scheme: str) -> tuple[str, ...]:
    return tuple(v for c in classifications.get(target, []) if c.get("classificationScheme") == scheme
                 for v in _slot_values(c, "authorInstitution") if v)


def _submission_set(where: str, root: etree._Element, classifications: Classified,
                    identifiers: Mapping[tuple[str, str], str]) -> SubmissionSet:
    marked = {target for target, nodes in classifications.items()
              for node in nodes if node.get("classificationNode") == SS_NODE}
    packages = [p for p in root.iter(f"{_RIM}RegistryPackage") if p.get("id") in marked]
    if len(packages) != 1:
        raise XdmRefused(f"{where}: {len(packages)} SubmissionSets, not one")
    package = packages[0]
    target = package.get("id", "")
    content_types = _codes(classifications, target, SS_CONTENT_TYPE)
    submission = SubmissionSet(
        entry_id=target,
        unique_id=identifiers.get((target, SS_UNIQUE_ID), ""),
        source_id=identifiers.get((target, SS_SOURCE_ID), ""),
        patient_id=identifiers.get((target, SS_PATIENT_ID), ""),
        submission_time=_slot(package, "submissionTime"),
        title=_name_of(package),
        content_type_code=content_types[0] if content_types else None,
        author_institutions=_institutions(classifications, target, SS_AUTHOR),
    )
    if not submission.unique_id or not submission.patient_id:
        raise XdmRefused(f"{where}: the SubmissionSet has no uniqueId or no patientId")
    return submission


def _document(where: str, folder: str, obj: etree._Element, classifications: Classified,
              identifiers: Mapping[tuple[str, str], str], by_name: Mapping[str, tuple[str, bytes]],
              limits: XdmLimits) -> DocumentEntry:
    target = obj.get("id", "")
    unique_id = identifiers.get((target, DE_UNIQUE_ID), "")
    patient_id = identifiers.get((target, DE_PATIENT_ID), "")
    if not unique_id or not patient_id:
        raise XdmRefused(f"{where}: a DocumentEntry has no uniqueId or no patientId")
    uri = _uri(obj)
    if not uri:
        raise XdmRefused(f"{where}: a DocumentEntry has no URI slot")
    problem = _name_problem(uri, limits)
    if problem:
        raise XdmRefused(f"{where}: a URI slot holds {problem}")
    found = by_name.get(f"{folder}/{uri}".lower())
    if found is None:
        raise XdmRefused(f"{where}: the URI {uri} names no file of the subset")
    name, data = found
    declared_hash = _slot(obj, "hash").lower()
    declared_size = _slot(obj, "size")
    if not declared_hash or not declared_size:
        raise XdmRefused(f"{where}: the DocumentEntry of {uri} has no hash or no size slot")
    if declared_hash != hashlib.sha1(data).hexdigest():
        raise XdmRefused(f"{name}: the hash slot does not match the file")
    if declared_size != str(len(data)):
        raise XdmRefused(f"{name}: the size slot ({declared_size}) does not match the file ({len(data)} bytes)")
    mime_type = obj.get("mimeType", "")
    _check_content(name, mime_type, data, limits)
    type_codes = _codes(classifications, target, DE_TYPE)
    class_codes = _codes(classifications, target, DE_CLASS)
    format_codes = _codes(classifications, target, DE_FORMAT)
    return DocumentEntry(
        entry_id=target,
        unique_id=unique_id,
        patient_id=patient_id,
        mime_type=mime_type,
        uri=uri,
        hash=declared_hash,
        size=len(data),
        title=_name_of(obj),
        creation_time=_slot(obj, "creationTime"),
        type_code=type_codes[0] if type_codes else None,
        class_code=class_codes[0] if class_codes else None,
        format_code=format_codes[0] if format_codes else None,
        confidentiality_codes=tuple(_codes(classifications, target, DE_CONFIDENTIALITY)),
        author_institutions=_institutions(classifications, target, DE_AUTHOR),
        data=data,
    )


def _check_content(name: str, mime_type: str, data: bytes, limits: XdmLimits) -> None:
    """The file is what its mimeType says: a PDF starts with ``%PDF-``; XML goes through the hardened parser."""
    if mime_type == "application/pdf" and not data.startswith(b"%PDF-"):
        raise XdmRefused(f"{name}: not a PDF, though its mimeType says so")
    if mime_type in _XML_TYPES:
        try:
            parse_untrusted(data, max_bytes=limits.max_entry_bytes)
        except UnsafeXml as exc:
            raise XdmRefused(f"{name}: {exc}") from None
