"""read_package: the real FR Core package, and malformed or hostile packages built here."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Sequence
from typing import Any

import pytest

from fhir_profiles import package as package_module
from fhir_profiles.package import PackageError, read_package
from tests.conftest import conformance_dir

MANIFEST = {"name": "example.fhir.test", "version": "1.0.0", "fhirVersions": ["4.0.1"],
            "dependencies": {"hl7.fhir.r4.core": "4.0.1"}}
PATIENT_SD = {"resourceType": "StructureDefinition", "url": "http://example.org/StructureDefinition/p"}


def tgz(members: dict[str, bytes | dict[str, Any]], *, extra: Sequence[tarfile.TarInfo] = ()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, content in members.items():
            raw = json.dumps(content).encode() if isinstance(content, dict) else content
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
        for info in extra:
            archive.addfile(info)
    return out.getvalue()


def valid(**more: bytes | dict[str, Any]) -> dict[str, bytes | dict[str, Any]]:
    return {"package/package.json": MANIFEST, "package/StructureDefinition-p.json": PATIENT_SD, **more}


@pytest.mark.conformance
def test_fr_core_2_1_0() -> None:
    data = (conformance_dir("ans", "fr-core", "2.1.0") / "package.tgz").read_bytes()
    package = read_package(data)
    assert package.id == "hl7.fhir.fr.core#2.1.0"
    assert package.canonical == "https://hl7.fr/ig/fhir/core"
    assert package.fhir_versions == ("4.0.1",)
    assert dict(package.dependencies) == {
        "hl7.fhir.r4.core": "4.0.1",
        "hl7.terminology.r4": "6.0.2",
        "hl7.fhir.uv.extensions.r4": "5.1.0",
        "ans.fr.nos": "1.3.0",
    }
    kinds = {r["resourceType"] for r in package.resources}
    assert {"StructureDefinition", "ValueSet", "CodeSystem"} <= kinds
    assert len(package.resources) > 100
    assert len(package.examples) == 12
    # package/other/ carries a copy of the ImplementationGuide: ignored, so the IG is there once
    assert sum(r["resourceType"] == "ImplementationGuide" for r in package.resources) == 1


def test_a_minimal_package_with_an_example_and_ignored_members() -> None:
    package = read_package(tgz(valid(**{
        "package/example/Patient-a.json": {"resourceType": "Patient", "id": "a"},
        "package/.index.json": b"not even json",
        "package/other/spec.internals": b"\x00binary",
        "package/xml/StructureDefinition-p.xml": b"<xml/>",
        "package/openapi/p.json": b"{broken",
        "package/README.md": b"# hello",
    })))
    assert package.id == "example.fhir.test#1.0.0"
    assert package.resources == (PATIENT_SD,)
    assert package.examples == ({"resourceType": "Patient", "id": "a"},)


def test_fhir_version_list_is_accepted() -> None:
    manifest = {"name": "old.style", "version": "0.1.0", "fhir-version-list": ["4.0.0"]}
    assert read_package(tgz({"package/package.json": manifest})).fhir_versions == ("4.0.0",)


def fails(data: bytes, *words: str) -> None:
    with pytest.raises(PackageError) as caught:
        read_package(data)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_not_gzip() -> None:
    fails(b"PK\x03\x04 a zip file", "not gzip")
    fails(b"\x1f\x8b\x08\x00garbage", "gzip")


def test_gzip_but_not_tar() -> None:
    fails(gzip.compress(b"just some text, not a tar archive" * 40), "tar")


def test_no_package_json() -> None:
    fails(tgz({"package/StructureDefinition-p.json": PATIENT_SD}), "package/package.json")


@pytest.mark.parametrize(("manifest", "words"), [
    ({"version": "1.0.0", "fhirVersions": ["4.0.1"]}, ("no name",)),
    ({"name": "x", "fhirVersions": ["4.0.1"]}, ("x", "no version")),
    ({"name": "x", "version": "1"}, ("x#1", "fhirVersions")),
    ({"name": "x", "version": "1", "fhirVersions": ["5.0.0"]}, ("x#1", "5.0.0", "not R4")),
    ({"name": "x", "version": "1", "fhirVersions": ["4.3.0"]}, ("4.3.0", "not R4")),
    ({"name": "x", "version": "1", "fhirVersions": ["4.0.1"], "dependencies": ["a"]}, ("dependencies",)),
])
def test_bad_manifest(manifest: dict[str, Any], words: tuple[str, ...]) -> None:
    fails(tgz({"package/package.json": manifest}), *words)


def test_a_broken_json_member_is_named() -> None:
    fails(tgz(valid(**{"package/ValueSet-v.json": b"{\"resourceType\": "})), "package/ValueSet-v.json", "JSON")


def test_a_json_member_that_is_not_a_resource_is_named() -> None:
    fails(tgz(valid(**{"package/example/list.json": b"[1, 2]"})), "package/example/list.json", "resourceType")
    fails(tgz(valid(**{"package/x.json": {"url": "no type"}})), "package/x.json", "resourceType")


@pytest.mark.parametrize("name", ["package/../evil.json", "../package/x.json", "package/a/../../x.json"])
def test_a_path_leaving_the_folder(name: str) -> None:
    fails(tgz(valid(**{name: PATIENT_SD})), name, "leaves")


def test_an_absolute_path() -> None:
    fails(tgz(valid(**{"/etc/x.json": PATIENT_SD})), "/etc/x.json", "absolute")


def test_a_member_outside_package() -> None:
    fails(tgz(valid(**{"other/x.json": PATIENT_SD})), "other/x.json", "outside package/")


def test_links_and_devices() -> None:
    symlink = tarfile.TarInfo("package/StructureDefinition-link.json")
    symlink.type, symlink.linkname = tarfile.SYMTYPE, "/etc/passwd"
    fails(tgz(valid(), extra=[symlink]), "package/StructureDefinition-link.json", "link")
    hardlink = tarfile.TarInfo("package/hard.json")
    hardlink.type, hardlink.linkname = tarfile.LNKTYPE, "package/package.json"
    fails(tgz(valid(), extra=[hardlink]), "package/hard.json", "link")
    device = tarfile.TarInfo("package/dev.json")
    device.type = tarfile.CHRTYPE
    fails(tgz(valid(), extra=[device]), "package/dev.json", "not a regular file")


def test_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    data = tgz(valid(**{"package/big.json": {"resourceType": "Basic", "pad": "x" * 5000}}))
    monkeypatch.setattr(package_module, "MAX_COMPRESSED_BYTES", len(data) - 1)
    fails(data, "bytes, more than")
    monkeypatch.undo()
    monkeypatch.setattr(package_module, "MAX_MEMBER_BYTES", 4000)
    fails(data, "package/big.json", "more than 4,000")
    monkeypatch.undo()
    monkeypatch.setattr(package_module, "MAX_MEMBERS", 2)
    fails(data, "more than 2 members")
    monkeypatch.undo()
    assert read_package(data).resources[1]["resourceType"] == "Basic"


def test_a_gzip_bomb_is_stopped_while_inflating(monkeypatch: pytest.MonkeyPatch) -> None:
    """64 MB of zeros (64 KB compressed) in one member: refused on its declared size, before it is inflated."""
    monkeypatch.setattr(package_module, "MAX_TOTAL_BYTES", 1024 * 1024)
    monkeypatch.setattr(package_module, "MAX_MEMBER_BYTES", 1024 * 1024)
    zeros = 64 * 1024 * 1024  # 64 MB of zeros compresses to about 64 KB
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        header = tarfile.TarInfo("package/package.json")
        header.size = zeros
        gz.write(header.tobuf(format=tarfile.GNU_FORMAT))
        block = b"\0" * (1024 * 1024)
        for _ in range(zeros // len(block)):
            gz.write(block)
    data = out.getvalue()
    assert len(data) < 200 * 1024
    fails(data, "package/package.json", "more than 1,048,576")


def test_members_adding_up_beyond_the_total(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(package_module, "MAX_TOTAL_BYTES", 20_000)
    members = {f"package/Basic-{n}.json": {"resourceType": "Basic", "pad": "x" * 3000} for n in range(10)}
    fails(tgz(valid(**members)), "inflates to more than 20,000 bytes")


def test_a_bomb_hidden_in_a_tar_header_is_stopped_by_the_inflater(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GNU long-name header of 16 MB: tarfile reads it as part of the next header, not as a member,
    so only the running total of inflated bytes stops it."""
    monkeypatch.setattr(package_module, "MAX_TOTAL_BYTES", 1024 * 1024)
    monkeypatch.setattr(package_module, "MAX_MEMBERS", 10)
    info = tarfile.TarInfo("package/" + "a" * (16 * 1024 * 1024) + ".json")
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(info.tobuf(format=tarfile.GNU_FORMAT))
    assert len(out.getvalue()) < 100 * 1024
    fails(out.getvalue(), "inflates to more than 1,048,576 bytes")
