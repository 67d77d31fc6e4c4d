"""IHE XDM: build → read round trip, checked independently with zipfile and lxml; hostile archives refused.

Each refusal test also checks that the reader wrote nothing anywhere (an audit hook sees every open for writing).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from dui.dmp import ebrim
from dui.dmp.metadata import submission_set
from mssante.errors import XdmBuildError, XdmRefused
from mssante.xdm import NS_RIM, XdmFile, XdmLimits, build_xdm, fill_document_slots, read_xdm
from tests.conftest import conformance_dir
from tests.mssante import samples
from tests.mssante.samples import CDA, PATIENT_CX, PDF, SENDER, cda_doc, pdf_doc, submit_objects
from tests.unit.dmp_samples import SOURCE_ID, dlu_entry

_WRITES: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _WRITES is None or event != "open":
        return
    path, mode, flags = args
    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        isinstance(flags, int) and flags & 0o3 != 0)
    if writing:
        _WRITES.append(str(path))


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def no_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails any test of this module that opens a file for writing, or leaves one in its working folder (a
    temporary one): building and reading stay in memory."""
    global _WRITES
    monkeypatch.chdir(tmp_path)
    _WRITES = []
    try:
        yield
        assert _WRITES == [], f"files opened for writing: {_WRITES}"
        assert list(tmp_path.iterdir()) == []
    finally:
        _WRITES = None


def _package() -> tuple[bytes, list[XdmFile]]:
    cda, pdf = cda_doc(), pdf_doc()
    files = [XdmFile("DOC0001.XML", CDA, "DLU"), XdmFile("DOC0002.PDF", PDF, "DLU (PDF)")]
    metadata = fill_document_slots(submit_objects([cda, pdf]), {cda.entry_id: files[0], pdf.unique_id: files[1]})
    return build_xdm(files, metadata, SENDER), files


def _refused(data: bytes, limits: XdmLimits | None = None) -> str:
    with pytest.raises(XdmRefused) as caught:
        read_xdm(data, limits=limits or XdmLimits())
    return caught.value.reason


def test_round_trip_gives_back_the_files_and_their_metadata() -> None:
    archive, files = _package()
    package = read_xdm(archive)
    assert [s.folder for s in package.subsets] == ["IHE_XDM/SUBSET01"]
    subset = package.subsets[0]
    assert subset.submission_set.patient_id == PATIENT_CX
    assert subset.submission_set.unique_id == "1.2.250.1.999.1.3.1"
    assert subset.submission_set.content_type_code is not None
    assert subset.submission_set.content_type_code.code == "74207-2"
    cda, pdf = subset.documents
    assert (cda.uri, cda.data, cda.mime_type, cda.size) == ("DOC0001.XML", CDA, "text/xml", len(CDA))
    assert (pdf.uri, pdf.data, pdf.mime_type) == ("DOC0002.PDF", PDF, "application/pdf")
    assert cda.hash == hashlib.sha1(CDA).hexdigest()
    assert cda.unique_id == "1.2.250.1.999.1.2^DLU-1" and cda.patient_id == PATIENT_CX
    assert cda.type_code is not None and (cda.type_code.code, cda.type_code.scheme) == ("74207-2",
                                                                                        "2.16.840.1.113883.6.1")
    assert cda.format_code is not None and cda.format_code.code == "urn:asip:ci-sis:dlu:2015"
    assert [c.code for c in cda.confidentiality_codes] == ["N", "INVISIBLE_PATIENT"]
    assert cda.title == "Dossier de liaison d'urgence"
    assert cda.author_institutions == (samples.INSTITUTION,)
    assert set(package.files) == {"INDEX.HTM", "README.TXT", "IHE_XDM/SUBSET01/METADATA.XML",
                                  "IHE_XDM/SUBSET01/DOC0001.XML", "IHE_XDM/SUBSET01/DOC0002.PDF"}
    assert b'href="IHE_XDM/SUBSET01/DOC0001.XML"' in package.files["INDEX.HTM"]
    assert b"DUI EHPAD 0.1.0" in package.files["README.TXT"] and b"Projet DUI" in package.files["README.TXT"]
    assert [f.data for f in files] == [cda.data, pdf.data]


def test_metadata_hash_and_size_match_the_files_read_independently() -> None:
    archive, _ = _package()
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        names = zf.namelist()
        root = etree.fromstring(zf.read("IHE_XDM/SUBSET01/METADATA.XML"))
        checked = 0
        for obj in root.iter(f"{{{NS_RIM}}}ExtrinsicObject"):
            slots = {s.get("name"): s.findtext(f"{{{NS_RIM}}}ValueList/{{{NS_RIM}}}Value")
                     for s in obj.findall(f"{{{NS_RIM}}}Slot")}
            data = zf.read(f"IHE_XDM/SUBSET01/{slots['URI']}")
            assert slots["hash"] == hashlib.sha1(data).hexdigest()
            assert slots["size"] == str(len(data))
            checked += 1
    assert checked == 2
    assert names[:2] == ["INDEX.HTM", "README.TXT"]


def test_the_service_s_own_ebrim_builder_feeds_the_archive() -> None:
    """METADATA.XML from dui.dmp.ebrim (the application's builder), filled and zipped, is read back."""
    entry, cda = dlu_entry()
    root = etree.Element(f"{{{ebrim.NS_LCM}}}SubmitObjectsRequest", nsmap={"lcm": ebrim.NS_LCM, "rim": ebrim.NS_RIM})
    objects = etree.SubElement(root, f"{{{ebrim.NS_RIM}}}RegistryObjectList")
    ebrim.extrinsic_object(objects, entry)
    ebrim.registry_package(objects, submission_set(entry, SOURCE_ID, "1.2.250.1.999.1.3.7",
                                                   dt.datetime(2026, 1, 5, tzinfo=dt.UTC)))
    document = XdmFile("DOC0001.XML", cda, "DLU")
    metadata = fill_document_slots(etree.tostring(root), {entry.entry_uuid: document})
    package = read_xdm(build_xdm([document], metadata, SENDER))
    (read,) = package.documents
    assert (read.unique_id, read.patient_id, read.data) == (entry.unique_id, entry.patient_id, cda)
    assert read.type_code is not None and read.type_code.code == entry.type_code.code


def test_the_conformance_dlu_example_goes_through() -> None:
    cda = (conformance_dir("cda", "ExemplesCDA") / "DLU-EHPAD-DLU_2022.01.xml").read_bytes()
    doc = cda_doc()
    document = XdmFile("DOC0001.XML", cda)
    package = read_xdm(build_xdm([document], fill_document_slots(submit_objects([doc]), {doc.entry_id: document}),
                                 SENDER))
    assert package.documents[0].data == cda


def test_metadata_given_as_a_function_of_the_files() -> None:
    doc = cda_doc()
    document = XdmFile("DOC0001.XML", CDA)
    archive = build_xdm([document], lambda files: fill_document_slots(submit_objects([doc]),
                                                                        {doc.entry_id: files[0]}), SENDER)
    assert read_xdm(archive).documents[0].entry_id == doc.entry_id


def test_the_submission_set_classification_may_sit_beside_the_package() -> None:
    doc = cda_doc()
    document = XdmFile("DOC0001.XML", CDA)
    metadata = fill_document_slots(submit_objects([doc], classify_at_top=True), {doc.unique_id: document})
    assert read_xdm(build_xdm([document], metadata, SENDER)).subsets[0].submission_set.patient_id == PATIENT_CX


def test_fill_document_slots_replaces_stale_slots() -> None:
    doc = cda_doc()
    stale = fill_document_slots(submit_objects([doc]), {doc.entry_id: XdmFile("OLD.XML", b"<old/>")})
    fresh = fill_document_slots(stale, {doc.entry_id: XdmFile("DOC0001.XML", CDA)})
    root = etree.fromstring(fresh)
    slots = [s.get("name") for s in root.iter(f"{{{NS_RIM}}}Slot") if s.getparent().tag.endswith("ExtrinsicObject")]
    assert slots.count("URI") == slots.count("hash") == slots.count("size") == 1
    assert slots[:2] == ["creationTime", "languageCode"]  # the new slots follow the existing ones


def test_fill_document_slots_needs_one_matching_object() -> None:
    with pytest.raises(XdmBuildError, match="0 ExtrinsicObject"):
        fill_document_slots(submit_objects([cda_doc()]), {"urn:uuid:nobody": XdmFile("DOC0001.XML", CDA)})


@pytest.mark.parametrize(("name", "data", "message"), [
    ("DOC0002.XML", CDA, "names no file"),
    ("DOC0001.XML", CDA + b" ", "hash slot does not match"),
])
def test_build_checks_the_metadata_against_the_files(name: str, data: bytes, message: str) -> None:
    doc = cda_doc()
    metadata = fill_document_slots(submit_objects([doc]), {doc.entry_id: XdmFile(name, CDA)})
    with pytest.raises(XdmBuildError, match=message):
        build_xdm([XdmFile("DOC0001.XML", data)], metadata, SENDER)


def test_build_checks_the_size_slot() -> None:
    doc = cda_doc()
    metadata = fill_document_slots(submit_objects([doc]), {doc.entry_id: XdmFile("DOC0001.XML", CDA)})
    metadata = metadata.replace(f">{len(CDA)}<".encode(), f">{len(CDA) + 1}<".encode())
    with pytest.raises(XdmBuildError, match="size slot"):
        build_xdm([XdmFile("DOC0001.XML", CDA)], metadata, SENDER)


@pytest.mark.parametrize("name", ["doc0001.xml", "DOCUMENT01.XML", "../DOC.XML", "METADATA.XML", "DOC 1.XML"])
def test_build_wants_8_3_upper_case_names(name: str) -> None:
    with pytest.raises(XdmBuildError):
        build_xdm([XdmFile(name, CDA)], b"<x/>", SENDER)


# ---- hostile archives ------------------------------------------------------------------------------------------

def _valid_entries(extra: list[tuple[str | zipfile.ZipInfo, bytes]] | None = None) -> list[tuple[str | zipfile.ZipInfo,
                                                                                                 bytes]]:
    doc = cda_doc()
    document = XdmFile("DOC0001.XML", CDA)
    metadata = fill_document_slots(submit_objects([doc]), {doc.entry_id: document})
    return [("INDEX.HTM", b"<html></html>"), ("README.TXT", b"readme"),
            ("IHE_XDM/SUBSET01/METADATA.XML", metadata), ("IHE_XDM/SUBSET01/DOC0001.XML", CDA), *(extra or [])]


def test_a_valid_hand_made_archive_is_accepted() -> None:
    """The baseline of the hostile cases below: the same archive without the trick is read."""
    assert read_xdm(samples.zip_of(_valid_entries([("IHE_XDM/SUBSET01/EXTRA.TXT", b"x")]))).documents


@pytest.mark.parametrize(("evil", "reason"), [
    ("../../../tmp/evil.sh", "'..'"),
    ("/tmp/evil/abs/x.sh", "absolute path"),
    ("..\\..\\evil\\win.sh", "backslash"),
    ("C:/Windows/evil.sh", "drive letter"),
    ("IHE_XDM/SUBSET01/./x", "'..' or '.'"),
    ("IHE_XDM//SUBSET01/x", "empty path segment"),
    ("IHE_XDM/SUBSET01/é.XML", "characters outside"),
    ("A/B/C/D/E/F.TXT", "deeper than"),
])
def test_dangerous_names_are_refused(evil: str, reason: str) -> None:
    placeholder = "X" * len(evil.encode())
    data = samples.rename(samples.zip_of(_valid_entries([(placeholder, b"#!/bin/sh\necho pwned\n")])),
                          placeholder, evil)
    assert reason in _refused(data)


def test_a_symbolic_link_is_refused() -> None:
    link = zipfile.ZipInfo("IHE_XDM/SUBSET01/LINK.XML")
    link.create_system = 3
    link.external_attr = 0o120777 << 16
    assert "symbolic link" in _refused(samples.zip_of(_valid_entries([(link, b"/etc/passwd")])))


def test_an_encrypted_entry_is_refused() -> None:
    data = samples.zip_of(_valid_entries([("IHE_XDM/SUBSET01/SECRET.TXT", b"not really encrypted")]))
    assert "encrypted" in _refused(samples.set_flag_bits(data, "IHE_XDM/SUBSET01/SECRET.TXT", 0x1))


def test_an_unusual_compression_method_is_refused() -> None:
    entry = zipfile.ZipInfo("IHE_XDM/SUBSET01/B.TXT")
    entry.compress_type = zipfile.ZIP_BZIP2
    assert "compression method 12" in _refused(samples.zip_of(_valid_entries([(entry, b"x" * 100)])))


def test_a_bomb_with_a_high_ratio_is_refused_before_decompressing() -> None:
    data = samples.zip_of(_valid_entries([("IHE_XDM/SUBSET01/BOMB.XML", b"\0" * (12 * 1024 * 1024))]))
    assert len(data) < 100_000
    assert "compression ratio above 100" in _refused(data)


def test_a_bomb_lying_about_its_size_is_stopped_at_the_declared_size() -> None:
    data = samples.zip_of(_valid_entries([("IHE_XDM/SUBSET01/BOMB.XML", b"A" * (5 * 1024 * 1024))]))
    forged = samples.set_declared_size(data, "IHE_XDM/SUBSET01/BOMB.XML", 1000)
    assert "bad CRC-32" in _refused(forged)


def test_a_declared_size_over_the_limit_is_refused() -> None:
    data = samples.zip_of(_valid_entries([("IHE_XDM/SUBSET01/BIG.BIN", b"B" * 100)]))
    forged = samples.set_declared_size(data, "IHE_XDM/SUBSET01/BIG.BIN", 200 * 1024 * 1024)
    assert "declares 209715200 bytes" in _refused(forged)


def test_the_total_declared_size_is_capped() -> None:
    data = samples.zip_of(_valid_entries([(f"IHE_XDM/SUBSET01/F{i}.BIN", bytes(range(256)) * 40) for i in range(5)]))
    assert "declare" in _refused(data, XdmLimits(max_total_bytes=40_000))


def test_too_many_entries_are_refused() -> None:
    data = samples.zip_of(_valid_entries([(f"IHE_XDM/SUBSET01/F{i:04}.TXT", b"x") for i in range(61)]))
    assert "65 entries, more than 64" in _refused(data)


def test_an_oversized_archive_is_refused_unread() -> None:
    assert "larger than" in _refused(b"PK" + b"\0" * 2000, XdmLimits(max_archive_bytes=1000))


@pytest.mark.parametrize("duplicate", ["IHE_XDM/SUBSET01/DOC0001.XML", "IHE_XDM/SUBSET01/doc0001.xml"])
def test_duplicate_names_are_refused(duplicate: str) -> None:
    """zipfile would warn and write it; the raw rename makes the second entry carry the first one's name."""
    data = samples.zip_of(_valid_entries([("IHE_XDM/SUBSET01/OTHER01.XYZ", b"other")]))
    assert "appears twice" in _refused(samples.rename(data, "IHE_XDM/SUBSET01/OTHER01.XYZ", duplicate))


def test_overlapping_entries_are_refused() -> None:
    data = samples.zip_of(_valid_entries([("IHE_XDM/SUBSET01/A.TXT", b"a" * 500), ("IHE_XDM/SUBSET01/B.TXT", b"b")]))
    forged = samples.point_entry_at(data, "IHE_XDM/SUBSET01/B.TXT", "IHE_XDM/SUBSET01/A.TXT")
    assert "overlaps" in _refused(forged)


def test_a_nested_archive_is_refused() -> None:
    inner = samples.zip_of([("X.TXT", b"x")])
    assert "nested archive" in _refused(samples.zip_of(_valid_entries([("IHE_XDM/SUBSET01/INNER.ZIP", inner)])))


def test_not_a_zip_is_refused() -> None:
    assert _refused(b"%PDF-1.4 definitely not a zip") == "not a readable zip archive"


def test_an_archive_without_metadata_is_not_xdm() -> None:
    data = samples.zip_of([("INDEX.HTM", b"<html/>"), ("IHE_XDM/SUBSET01/DOC0001.XML", CDA)])
    assert "not an XDM archive" in _refused(data)


def _with_metadata(metadata: bytes, doc_data: bytes = CDA) -> bytes:
    return samples.zip_of([("IHE_XDM/SUBSET01/METADATA.XML", metadata), ("IHE_XDM/SUBSET01/DOC0001.XML", doc_data)])


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE lcm [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0">&xxe;</lcm:SubmitObjectsRequest>"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<lolz>&lol3;</lolz>"""


@pytest.mark.parametrize("metadata", [XXE, LAUGHS], ids=["xxe", "billion-laughs"])
def test_dtd_tricks_in_metadata_are_refused(metadata: bytes) -> None:
    assert _refused(_with_metadata(metadata)) == "IHE_XDM/SUBSET01/METADATA.XML: a DOCTYPE or an entity declaration " \
                                                 "is refused"


def test_a_doctype_in_the_cda_is_refused() -> None:
    doc = cda_doc()
    evil = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "http://127.0.0.1:1/">]><x>&e;</x>'
    metadata = fill_document_slots(submit_objects([doc]), {doc.entry_id: XdmFile("DOC0001.XML", evil)})
    assert "DOC0001.XML: a DOCTYPE" in _refused(_with_metadata(metadata, evil))


def test_metadata_that_is_not_a_submit_objects_request_is_refused() -> None:
    assert "not an lcm:SubmitObjectsRequest" in _refused(_with_metadata(b"<root/>"))


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda m: m.replace(b">DOC0001.XML<", b">DOC0009.XML<"), "names no file"),
    (lambda m: m.replace(b">DOC0001.XML<", b">../DOC0001<"), "a URI slot holds a '..'"),
    (lambda m: m.replace(hashlib.sha1(CDA).hexdigest().encode(), b"0" * 40), "hash slot does not match"),
    (lambda m: m.replace(f">{len(CDA)}<".encode(), b">12<"), "size slot (12) does not match"),
    (lambda m: m.replace(b'mimeType="text/xml"', b'mimeType="application/pdf"'), "not a PDF"),
    (lambda m: m.replace(b"&amp;1.2.250.1.213.1.4.10&amp;", b"&amp;1.2.3&amp;", 1), "patientId is not the Submission"),
])
def test_metadata_inconsistent_with_the_files_is_refused(edit: object, reason: str) -> None:
    doc = cda_doc()
    metadata = fill_document_slots(submit_objects([doc]), {doc.entry_id: XdmFile("DOC0001.XML", CDA)})
    assert callable(edit)
    assert reason in _refused(_with_metadata(edit(metadata)))


def test_a_long_uri_split_in_parts_is_put_back_together() -> None:
    doc = cda_doc()
    metadata = fill_document_slots(submit_objects([doc]), {doc.entry_id: XdmFile("DOC0001.XML", CDA)})
    split = metadata.replace(b"<rim:Value>DOC0001.XML</rim:Value>",
                             b"<rim:Value>2|01.XML</rim:Value><rim:Value>1|DOC00</rim:Value>")
    assert split != metadata
    assert read_xdm(_with_metadata(split)).documents[0].uri == "DOC0001.XML"
