"""The conformance resources of the installed packages and of the service itself, served under /fhir
(docs/profiles.md, "Conformance resources served"): read and searched like any resource, read-only, and every
canonical the CapabilityStatement names resolves on the server."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask

import fhir_profiles
from dui.errors import Forbidden
from dui.fhir import router
from dui.profiles import catalogue
from fhir_profiles import CANONICAL
from fhir_profiles.package import Package, read_package
from tests.conftest import BASE_URL, conformance_dir
from tests.functional.test_authorization import actor, call, organization
from tests.helpers import FhirClient, diagnostics, ids

pytestmark = pytest.mark.conformance

FR_CORE = "hl7.fhir.fr.core"
FR_CORE_PATIENT = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"
FR_CORE_PATIENT_INS = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins"
DUI_RESIDENT = f"{CANONICAL}/StructureDefinition/dui-resident"
TAG = f"_tag={quote(catalogue.SOURCE_SYSTEM)}|"
API_BASE = f"{BASE_URL}/fhir"  # DUI_CANONICAL_BASE unset: the server's OperationDefinitions and SearchParameters


def fr_core_path() -> Path:
    return conformance_dir("ans", "fr-core", "2.1.0") / "package.tgz"


def cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=list(args))


@pytest.fixture
def served(app: Flask, client: FhirClient) -> FhirClient:
    """The service's own definitions served (what `dui db upgrade` does), on the emptied test database."""
    result = cli(app, "profiles", "sync")
    assert result.exit_code == 0 and "added" in result.output, result.output
    return client


@pytest.fixture
def fr_core(app: Flask, served: FhirClient) -> FhirClient:
    result = cli(app, "profiles", "install", str(fr_core_path()))
    assert result.exit_code == 0, result.output
    assert "served under /fhir: 120 added" in result.output, result.output
    return served


def count(client: FhirClient, query: str) -> int:
    response = client.get(f"{query}{'&' if '?' in query else '?'}_summary=count")
    assert response.status_code == 200, response.get_data(as_text=True)
    return int(response.get_json()["total"])


def local_path(canonical: str) -> str:
    """Where a canonical of the service's own resolves on this server: ``{CANONICAL}/{Type}/{id}`` (its data
    definitions) and ``{API_BASE}/{Type}/{id}`` (its API: the FHIR base itself) are ``[base]/{Type}/{id}``."""
    for base in (CANONICAL, API_BASE):
        if canonical.startswith(base + "/"):
            return canonical.removeprefix(base + "/")
    raise AssertionError(f"not a canonical of the service's own: {canonical}")


def test_a_packages_resources_are_searched_like_any_resource_and_leave_with_it(app: Flask,
                                                                             fr_core: FhirClient) -> None:
    package = read_package(fr_core_path().read_bytes())
    expected = Counter(r["resourceType"] for r in package.resources if r["resourceType"] in catalogue.TYPES)
    assert expected["StructureDefinition"] == 63 and expected["ValueSet"] and expected["CodeSystem"]
    for rtype, number in expected.items():
        assert count(fr_core, f"{rtype}?{TAG}{FR_CORE}") == number, rtype

    found = fr_core.search(f"StructureDefinition?url={FR_CORE_PATIENT}")
    assert ids(found) == ["fr-core-patient"]
    sd = found["entry"][0]["resource"]
    assert sd["url"] == FR_CORE_PATIENT and sd["snapshot"]["element"]
    assert {"system": catalogue.SOURCE_SYSTEM, "code": FR_CORE, "display": "hl7.fhir.fr.core#2.1.0"} in \
        sd["meta"]["tag"]
    patients = fr_core.search("StructureDefinition?type=Patient&_count=100")
    urls = {e["resource"]["url"] for e in patients["entry"]}
    assert {FR_CORE_PATIENT, FR_CORE_PATIENT_INS, DUI_RESIDENT} <= urls
    assert all(e["resource"]["type"] == "Patient" for e in patients["entry"])
    assert count(fr_core, "StructureDefinition?type=Patient&derivation=constraint&status=active") == len(urls)

    value_set = next(r for r in package.resources if r["resourceType"] == "ValueSet")
    assert ids(fr_core.search(f"ValueSet?url={value_set['url']}")) == [value_set["id"]]
    code_system = next(r for r in package.resources if r["resourceType"] == "CodeSystem")
    assert ids(fr_core.search(f"CodeSystem?url={code_system['url']}&version={code_system['version']}")) == \
        [code_system["id"]]
    assert fr_core.search(f"CodeSystem?url={code_system['url']}&version=0.0.0-none")["total"] == 0
    guide = fr_core.search("ImplementationGuide?name:contains=core")
    assert [e["resource"]["packageId"] for e in guide["entry"]] == [FR_CORE]

    # _summary, _elements and paging, as for any resource
    summary = fr_core.search(f"StructureDefinition?url={FR_CORE_PATIENT}&_summary=true")["entry"][0]["resource"]
    assert summary["url"] == FR_CORE_PATIENT and "snapshot" not in summary and "differential" not in summary
    elements = fr_core.search(f"StructureDefinition?url={FR_CORE_PATIENT}&_elements=url,type")["entry"][0]
    kept = set(elements["resource"])  # what was asked, and the mandatory elements (R4 search.html#elements)
    assert {"url", "type", "name", "status"} <= kept and not kept & {"snapshot", "differential", "description"}
    page = fr_core.search(f"StructureDefinition?{TAG}{FR_CORE}&_count=25&_sort=url")
    assert len(page["entry"]) == 25 and page["total"] == 63
    following = next(link["url"] for link in page["link"] if link["relation"] == "next")
    second = fr_core.search(following.split("/fhir/", 1)[1])
    assert len(second["entry"]) == 25 and not set(ids(second)) & set(ids(page))
    assert fr_core.get("StructureDefinition/fr-core-patient/_history").get_json()["total"] == 1

    removed = cli(app, "profiles", "remove", FR_CORE)
    assert removed.exit_code == 0 and "120 removed" in removed.output, removed.output
    for rtype in expected:
        assert count(fr_core, f"{rtype}?{TAG}{FR_CORE}") == 0, rtype
    assert fr_core.search(f"StructureDefinition?url={FR_CORE_PATIENT}")["total"] == 0
    assert fr_core.get("StructureDefinition/fr-core-patient").status_code == 410
    assert fr_core.get("StructureDefinition/dui-resident").status_code == 200  # the service's own stay


def test_install_again_changes_nothing_and_sync_is_idempotent(app: Flask, fr_core: FhirClient) -> None:
    again = cli(app, "profiles", "install", str(fr_core_path()))
    assert again.exit_code == 0 and "0 added, 0 changed, 0 removed" in again.output, again.output
    synced = cli(app, "profiles", "sync")
    assert synced.exit_code == 0 and "0 added, 0 changed, 0 removed" in synced.output, synced.output
    assert fr_core.get("StructureDefinition/fr-core-patient").get_json()["meta"]["versionId"] == "1"


def test_the_services_own_definitions_are_read_at_their_canonical(served: FhirClient) -> None:
    shipped = catalogue.own_definitions(API_BASE)
    kinds = Counter(r["resourceType"] for r in shipped)
    assert kinds["SearchParameter"] >= 5 and kinds["OperationDefinition"] >= 11
    for resource in shipped:  # the API's under the FHIR base (a read here), the data's under CANONICAL
        assert resource["url"].startswith(API_BASE if resource["resourceType"] in catalogue.API_TYPES else CANONICAL)
        response = served.get(local_path(resource["url"]))
        assert response.status_code == 200, (resource["url"], response.get_data(as_text=True))
        body = response.get_json()
        assert (body["url"], body["resourceType"]) == (resource["url"], resource["resourceType"])
        assert served.search(f"{resource['resourceType']}?url={resource['url']}")["total"] == 1
    assert count(served, f"SearchParameter?{TAG}dui") == kinds["SearchParameter"]
    assert ids(served.search("SearchParameter?code=identity-status&base=Patient")) == ["Patient-identity-status"]
    assert ids(served.search("OperationDefinition?code=dlu")) == ["Patient-dlu"]


def test_every_canonical_the_capability_statement_names_resolves_here(fr_core: FhirClient) -> None:
    statement = fr_core.get("metadata").get_json()
    rest = statement["rest"][0]
    ours: set[str] = set()
    elsewhere: set[tuple[str, str]] = set()  # (type, canonical): installed packages, found with ?url=

    def named(rtype: str, url: str) -> None:
        if url.startswith((CANONICAL + "/", API_BASE + "/")):
            ours.add(url)
        elif not url.startswith(("http://hl7.org/fhir/", "http://fhir-registry.smarthealthit.org/")):
            elsewhere.add((rtype, url))  # HL7's own resolve at hl7.org

    for resource in rest["resource"]:
        for param in resource["searchParam"]:
            if "definition" in param:
                named("SearchParameter", param["definition"])
        for operation in resource.get("operation", []):
            named("OperationDefinition", operation["definition"])
        for profile in resource.get("supportedProfile", []):
            named("StructureDefinition", profile)
    for operation in rest["operation"]:
        named("OperationDefinition", operation["definition"])
    for guide in statement["implementationGuide"]:
        named("ImplementationGuide", guide)
    assert {f"{API_BASE}/SearchParameter/Patient-identity-status", f"{API_BASE}/OperationDefinition/Patient-dlu",
            DUI_RESIDENT} <= ours
    assert not any(url.startswith(f"{CANONICAL}/{rtype}/") for url in ours for rtype in catalogue.API_TYPES)
    assert ("ImplementationGuide", "https://hl7.fr/ig/fhir/core/ImplementationGuide/hl7.fhir.fr.core") in elsewhere
    assert statement["implementationGuide"][0] == fhir_profiles.GUIDE and fhir_profiles.GUIDE in ours
    for url in sorted(ours):
        response = fr_core.get(local_path(url))
        assert response.status_code == 200 and response.get_json()["url"] == url, url
    for rtype, url in sorted(elsewhere):
        assert fr_core.search(f"{rtype}?url={url}")["total"] == 1, url


def test_supported_profiles_name_the_default_profile_and_those_installed(app: Flask, client: FhirClient) -> None:
    def patient_profiles() -> list[str]:
        rest = client.get("metadata").get_json()["rest"][0]
        return list(next(r for r in rest["resource"] if r["type"] == "Patient")["supportedProfile"])

    before = patient_profiles()
    assert before[0] == DUI_RESIDENT and FR_CORE_PATIENT not in before  # DUI_DEFAULT_PROFILES comes first
    assert client.get("metadata").get_json()["implementationGuide"] == [fhir_profiles.GUIDE]  # the service's own
    assert cli(app, "profiles", "install", str(fr_core_path())).exit_code == 0
    app.extensions["dui"].profiles.invalidate()
    after = patient_profiles()
    assert after[0] == DUI_RESIDENT and {FR_CORE_PATIENT, FR_CORE_PATIENT_INS} <= set(after)


def test_served_resources_are_read_only_and_clients_keep_their_own(fr_core: FhirClient) -> None:
    current = fr_core.get("StructureDefinition/fr-core-patient").get_json()
    changed = {**current, "status": "retired"}
    attempts = [
        fr_core.put("StructureDefinition/fr-core-patient", changed),
        fr_core.patch("StructureDefinition/fr-core-patient", [{"op": "replace", "path": "/status", "value": "retired"}],
                      content_type="application/json-patch+json"),
        fr_core.delete("StructureDefinition/fr-core-patient"),
        fr_core.delete(f"StructureDefinition?url={FR_CORE_PATIENT}"),
        fr_core.put("StructureDefinition/dui-resident",
                    {**fr_core.get("StructureDefinition/dui-resident").get_json(), "status": "retired"}),
        fr_core.delete("SearchParameter/Patient-identity-status"),
    ]
    for response in attempts:
        assert response.status_code == 403, response.get_data(as_text=True)
        assert response.get_json()["resourceType"] == "OperationOutcome"
        assert "served read-only" in diagnostics(response)
    assert "dui profiles install" in diagnostics(attempts[0])
    assert fr_core.get("StructureDefinition/fr-core-patient").get_json()["meta"]["versionId"] == "1"

    # a client's own profile, as before; the source tag is the server's
    own = {key: value for key, value in current.items() if key not in ("id", "meta")}
    own["url"] = "https://example.org/StructureDefinition/my-patient"
    created = fr_core.post("StructureDefinition", own)
    assert created.status_code == 201, created.get_data(as_text=True)
    mine = created.get_json()["id"]
    assert fr_core.delete(f"StructureDefinition/{mine}").status_code == 204
    forged = fr_core.post("StructureDefinition", {**own, "meta": {"tag": [
        {"system": catalogue.SOURCE_SYSTEM, "code": FR_CORE}]}})
    assert forged.status_code == 403 and catalogue.SOURCE_SYSTEM in diagnostics(forged)
    batch = fr_core.post("", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": changed, "request": {"method": "PUT", "url": "StructureDefinition/fr-core-patient"}}]})
    assert batch.status_code == 403, batch.get_data(as_text=True)


def test_a_clients_resource_holding_a_served_id_stops_the_install(app: Flask, served: FhirClient) -> None:
    package = read_package(fr_core_path().read_bytes())
    theirs = next(r for r in package.resources if r["id"] == "fr-core-patient")
    assert served.put("StructureDefinition/fr-core-patient", {**theirs, "url": "https://example.org/x"}).status_code \
        == 201
    result = cli(app, "profiles", "install", str(fr_core_path()))
    assert result.exit_code == 1 and "StructureDefinition/fr-core-patient is a resource a client stored" in \
        result.output, result.output
    assert "none installed" in cli(app, "profiles", "list").output
    assert count(served, f"StructureDefinition?{TAG}{FR_CORE}") == 0
    assert served.get("StructureDefinition/fr-core-patient").get_json()["url"] == "https://example.org/x"


def test_scoped_staff_of_one_ehpad_read_them(app: Flask, fr_core: FhirClient) -> None:
    organization(fr_core)
    for role in ("aide-soignant", "administratif", "medecin"):
        who = actor(role)
        status, bundle = call(app, who, "GET", f"StructureDefinition?url={FR_CORE_PATIENT}")
        assert status == 200 and [e["resource"]["id"] for e in bundle["entry"]] == ["fr-core-patient"], role
        status, body = call(app, who, "GET", "ValueSet/dui-identity-status")
        assert status == 200 and body["url"].endswith("/ValueSet/dui-identity-status"), role
    with pytest.raises(Forbidden, match="may not 'd' StructureDefinition"):
        call(app, actor("aide-soignant"), "DELETE", "StructureDefinition/fr-core-patient")


def test_ids_keep_their_own_and_a_collision_gets_a_stable_suffix() -> None:
    def package(name: str, *resources: dict[str, Any]) -> Package:
        return Package(name=name, version="1.0.0", resources=resources)

    shipped = [{"resourceType": "ValueSet", "id": "shared", "url": f"{CANONICAL}/ValueSet/shared"}]
    first = package("a.first", {"resourceType": "ValueSet", "id": "shared", "url": "https://a.example/ValueSet/s"},
                    {"resourceType": "CodeSystem", "id": "shared", "url": "https://a.example/CodeSystem/s"})
    second = package("b.second", {"resourceType": "ValueSet", "id": "shared", "url": "https://b.example/ValueSet/s"},
                     {"resourceType": "ValueSet", "url": "https://b.example/ValueSet/no-id"},
                     {"resourceType": "ValueSet", "id": "x" * 80, "url": "https://b.example/ValueSet/long"},
                     {"resourceType": "Patient", "id": "not-served"})
    found = {(e.source, e.type, e.url): e.id for e in catalogue.entries([second, first], shipped)}
    assert found[("dui", "ValueSet", f"{CANONICAL}/ValueSet/shared")] == "shared"
    assert found[("a.first", "CodeSystem", "https://a.example/CodeSystem/s")] == "shared"  # another type
    a_id = found[("a.first", "ValueSet", "https://a.example/ValueSet/s")]
    b_id = found[("b.second", "ValueSet", "https://b.example/ValueSet/s")]
    assert a_id.startswith("shared-") and b_id.startswith("shared-") and a_id != b_id
    assert found[("b.second", "ValueSet", "https://b.example/ValueSet/no-id")] == "no-id"
    long_id = found[("b.second", "ValueSet", "https://b.example/ValueSet/long")]
    assert long_id == "long"  # not a valid id (81 characters): the url's last segment
    assert all(catalogue.valid_id(i) for i in found.values()) and len(found) == 6
    again = {(e.source, e.type, e.url): e.id for e in catalogue.entries([first, second], shipped)}
    assert again == found  # whatever the order the packages come in
    assert catalogue.resource_id(second.resources[0], "b.second", {("ValueSet", "shared")}) == b_id
    assert len(catalogue.resource_id({"resourceType": "ValueSet", "id": "y" * 64}, "p", {("ValueSet", "y" * 64)})) \
        == 64


def test_each_operation_of_the_service_has_its_definition(app: Flask) -> None:
    registered = {**router.OPERATIONS, **app.extensions["dui"].operations}
    ours = {op.canonical: (rtype, name, op) for (rtype, name), op in registered.items()
            if op.canonical.startswith(CANONICAL + "/")}
    shipped = {r["url"]: r for r in fhir_profiles.definitions() if r["resourceType"] == "OperationDefinition"}
    assert len(ours) >= 11 and set(ours) == set(shipped)
    for url, (rtype, name, op) in ours.items():
        definition = shipped[url]
        assert (definition["code"], definition["resource"]) == (name.lstrip("$"), [rtype]), url
        assert (definition["type"], definition["instance"]) == (op.level == "type", op.level == "instance"), url
        assert definition["affectsState"] == (op.methods != ("GET",)), url


GROUP_BASE = "https://fhir.groupe-ehpad.example/dui"  # DUI_CANONICAL_BASE of a group that publishes its API


def statement_canonicals(client: FhirClient) -> tuple[set[str], set[str]]:
    """The canonicals the CapabilityStatement gives: its search parameters' and operations' definitions, and its
    supported profiles."""
    rest = client.get("metadata").get_json()["rest"][0]
    api = {p["definition"] for r in rest["resource"] for p in r["searchParam"] if "definition" in p}
    api |= {o["definition"] for r in rest["resource"] for o in r.get("operation", [])}
    api |= {o["definition"] for o in rest["operation"]}
    return api, {p for r in rest["resource"] for p in r.get("supportedProfile", [])}


def test_a_configured_api_base_moves_the_apis_canonicals_and_nothing_else(app: Flask, served: FhirClient,
                                                                        database_url: str, insi_dir: str) -> None:
    from dui.app import create_app
    from dui.settings import InsiSettings
    from tests.conftest import test_settings

    own = [r for r in catalogue.own_definitions(API_BASE) if r["resourceType"] in catalogue.API_TYPES]
    before = {r["url"]: served.get(local_path(r["url"])).get_json()["meta"]["versionId"] for r in own}
    group = create_app(test_settings(database_url, canonical_base=GROUP_BASE,
                                     insi=InsiSettings(simulator_dir=insi_dir, timeout=3.0)))
    try:
        synced = cli(group, "profiles", "sync")  # what `dui db upgrade` or `dui serve` do after the change
        assert synced.exit_code == 0 and f"0 added, {len(own)} changed, 0 removed" in synced.output, synced.output
        client = FhirClient(group.test_client())
        for url in before:
            moved = GROUP_BASE + url.removeprefix(API_BASE)
            found = client.search(f"{url.split('/')[-2]}?url={moved}")
            assert found["total"] == 1 and found["entry"][0]["resource"]["url"] == moved, moved
            assert client.search(f"{url.split('/')[-2]}?url={url}")["total"] == 0, url
        resident = client.get("StructureDefinition/dui-resident").get_json()  # a data definition stays
        assert resident["url"] == DUI_RESIDENT and resident["meta"]["versionId"] == "1"

        api, profiles = statement_canonicals(client)
        ours = {u for u in api if not u.startswith("http://hl7.org/fhir/")}
        assert f"{GROUP_BASE}/OperationDefinition/Patient-dlu" in ours
        assert f"{GROUP_BASE}/SearchParameter/Patient-identity-status" in ours
        assert all(u.startswith(GROUP_BASE + "/") for u in ours), sorted(ours)
        assert DUI_RESIDENT in profiles  # the data's canonicals are the same on every deployment
        with group.app_context():
            svc = group.extensions["dui"]
            with svc.unit_of_work(write=False) as session:
                assert catalogue.served_api_base(session) == GROUP_BASE
    finally:
        group.extensions["dui"].dispose()
    # and back: the ids stay, each canonical moved with a new version, the old one is found no more
    again = cli(app, "profiles", "sync")
    assert again.exit_code == 0 and f"0 added, {len(own)} changed, 0 removed" in again.output, again.output
    for url, version in before.items():
        body = served.get(local_path(url)).get_json()
        assert body["url"] == url and int(body["meta"]["versionId"]) == int(version) + 2, url
        assert served.search(f"{url.split('/')[-2]}?url={GROUP_BASE + url.removeprefix(API_BASE)}")["total"] == 0


def test_the_first_worker_to_start_publishes_a_changed_api_base_once(app: Flask, served: FhirClient,
                                                                    database_url: str, insi_dir: str,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from dui.app import create_app
    from dui.settings import InsiSettings
    from dui.web import worker_app
    from tests.conftest import test_settings

    dlu = "OperationDefinition/Patient-dlu"
    assert app.extensions["dui"].publish_api_base() is None  # the base the served resources name: nothing to do
    moved = [create_app(test_settings(database_url, base_url="https://ehpad.example/dui",  # DUI_BASE_URL changed
                                      insi=InsiSettings(simulator_dir=insi_dir, timeout=3.0))) for _ in range(2)]
    try:
        with ThreadPoolExecutor(2) as pool:  # two workers starting at once: one syncs, the other finds it done
            outcomes = list(pool.map(lambda a: a.extensions["dui"].publish_api_base(), moved))
        done = [o for o in outcomes if o is not None]
        assert len(done) == 1 and done[0][0] == API_BASE and done[0][1].updated >= 11, outcomes
        assert served.search(f"OperationDefinition?url=https://ehpad.example/dui/fhir/{dlu}")["total"] == 1
        assert served.search(f"OperationDefinition?url={API_BASE}/{dlu}")["total"] == 0
        assert moved[0].extensions["dui"].publish_api_base() is None  # once only
    finally:
        for other in moved:
            other.extensions["dui"].dispose()
    with caplog.at_level("INFO", logger="dui.profiles"):
        worker_app.publish_api_base(app)  # as a worker of the first deployment starts again
    assert "api base http://testserver/fhir (was https://ehpad.example/dui/fhir)" in caplog.text, caplog.text
    assert served.search(f"OperationDefinition?url={API_BASE}/{dlu}")["total"] == 1


def test_a_worker_that_cannot_publish_the_api_base_says_so_and_serves(insi_dir: str, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    from dui.app import create_app
    from dui.settings import InsiSettings
    from dui.web import worker_app
    from tests.conftest import test_settings

    bare = create_app(test_settings(f"sqlite:///{tmp_path / 'no-schema.sqlite'}",
                                    insi=InsiSettings(simulator_dir=insi_dir, timeout=3.0)))
    try:
        with caplog.at_level("ERROR", logger="dui.profiles"):
            worker_app.publish_api_base(bare)
    finally:
        bare.extensions["dui"].dispose()
    assert "not synced with the api base http://testserver/fhir" in caplog.text
    assert "run `dui profiles sync`" in caplog.text


def test_the_canonical_base_setting() -> None:
    from dui.settings import Settings, SettingsError

    assert Settings(base_url="https://ehpad.example").api_canonical_base == "https://ehpad.example/fhir"
    env = {"DUI_BASE_URL": "https://ehpad.example", "DUI_CANONICAL_BASE": GROUP_BASE + "/"}
    assert Settings.from_env(env).api_canonical_base == GROUP_BASE
    for wrong in ("fhir.example/dui", "https://fhir.example/dui?x=1", "https://fhir.example/#a", "urn:dui"):
        with pytest.raises(SettingsError, match="DUI_CANONICAL_BASE"):
            Settings.from_env({**env, "DUI_CANONICAL_BASE": wrong})
