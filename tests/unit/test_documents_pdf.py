"""The PDF of the DLU and the FLUDT: what a reader finds in it, read back with pypdf and drawn with pdfium."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import UTC, datetime

import pypdf
import pypdfium2 as pdfium
import pytest

from dui.documents.pdf import ALLERGY_NOT_GIVEN, NO_ALLERGY, NOT_GIVEN, printable, render
from dui.documents.record import Item, Person
from tests.documents_factory import BUILT_AT, empty_record, make_record, make_transfer, unqualified_identity


def _pages(data: bytes) -> list[str]:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return [page.extract_text() or "" for page in reader.pages]


def _text(data: bytes) -> str:
    return "\n".join(_pages(data))


def _flat(text: str) -> str:
    """Extracted text with line breaks and runs of spaces folded, to find phrases a table cell wrapped."""
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def dlu() -> bytes:
    return render(make_record(), "DLU", built_at=BUILT_AT)


@pytest.fixture(scope="module")
def fludt() -> bytes:
    return render(make_record(), "FLUDT", make_transfer(), built_at=BUILT_AT)


def test_a_pdf_of_one_or_two_a4_pages(dlu: bytes, fludt: bytes) -> None:
    for data in (dlu, fludt):
        assert data.startswith(b"%PDF-")
        reader = pypdf.PdfReader(io.BytesIO(data))
        assert 1 <= len(reader.pages) <= 2
        box = reader.pages[0].mediabox
        assert (round(float(box.width)), round(float(box.height))) == (595, 842)


def test_header_names_the_document_the_establishment_and_when(dlu: bytes) -> None:
    text = _flat(_text(dlu))
    assert "Dossier de liaison d'urgence (DLU)" in text
    assert "EHPAD Les Tilleuls (démo)" in text
    assert "FINESS 690001424" in text
    assert "Tél. 04 78 00 00 00" in text
    # built_at and as_of in French local time (UTC+1 in March)
    assert "Établi le 14/03/2026 à 09:02 à partir du dossier à jour du 14/03/2026 à 08:45" in text


def test_the_rniv_traits_and_the_ins_are_printed(dlu: bytes) -> None:
    text = _flat(_text(dlu))
    for expected in (
        "Nom de naissance LEFÈVRE",
        "Hélène Marie Thérèse",
        "21/05/1938",
        "Féminin",
        "Lyon (code INSEE 69123)",
        "Nom utilisé ŒUVRAY",
        "Matricule INS : 238056912301816 (Identité qualifiée)",
        "INS-NIR de test",
    ):
        assert expected in text, expected
    assert "Premier prénom de" in text and "naissance Hélène" in text
    assert "non communicable" not in text


def test_an_unqualified_identity_prints_no_matricule_but_its_status_and_local_identifier() -> None:
    record = make_record(identity=unqualified_identity())
    text = _flat(_text(render(record, "DLU", built_at=BUILT_AT)))
    assert "Statut de l'identité : Identité provisoire" in text
    assert "INS non communicable : identité non qualifiée" in text
    assert "IPP-000142" in text
    assert "Matricule INS" not in text
    assert "238056912301816" not in text


def test_allergies_and_treatments_come_first(dlu: bytes) -> None:
    text = _flat(_text(dlu))
    allergies, treatments = text.index("ALLERGIES (2)"), text.index("Traitements en cours (6)")
    arrival, contacts = text.index("À l'arrivée"), text.index("Qui appeler")
    pathologies, comment = text.index("Pathologies actives"), text.index("Commentaire")
    assert text.index("Matricule INS") < allergies < treatments < arrival < contacts < pathologies < comment
    assert "Pénicillines" in text and "œdème de Quincke" in text
    assert "Apixaban 2,5 mg" in text and "1 comprimé matin et soir" in text
    assert "Furosémide 40 mg" in text
    assert "04 78 12 34 56" in text and "MOREL Étienne" in text  # médecin traitant and his phone
    assert "06 12 34 56 78" in text and "Personne de confiance" in text
    assert "Portage de BMR" in text


def test_no_allergy_is_not_the_same_as_not_given() -> None:
    stated = _flat(_text(render(make_record(allergies=(), no_known_allergy=True), "DLU", built_at=BUILT_AT)))
    assert NO_ALLERGY in stated and ALLERGY_NOT_GIVEN not in stated
    assert "ALLERGIES (" not in stated
    unstated = _flat(_text(render(make_record(allergies=()), "DLU", built_at=BUILT_AT)))
    assert ALLERGY_NOT_GIVEN in unstated and NO_ALLERGY not in unstated


def test_empty_sections_print_non_renseigne() -> None:
    text = _text(render(empty_record(), "DLU", built_at=BUILT_AT))
    flat = _flat(text)
    # treatments, directives, dispositions, hospital, 4 contact rows, 6 item sections, commentary...
    assert flat.count(NOT_GIVEN) >= 15
    assert ALLERGY_NOT_GIVEN in flat and NO_ALLERGY not in flat
    after = flat[flat.index("Traitements en cours") :]
    assert after.split()[3:5] == NOT_GIVEN.split()  # "Traitements en cours Non renseigné"


def test_fludt_needs_the_transfer_and_prints_it(fludt: bytes) -> None:
    with pytest.raises(ValueError, match="transfer"):
        render(make_record(), "FLUDT")
    with pytest.raises(ValueError):
        render(make_record(), "DLU", make_transfer())
    with pytest.raises(ValueError):
        render(make_record(), "VSM")
    text = _flat(_text(fludt))
    assert "Fiche de liaison d'urgence – transfert (FLUDT)" in text
    for expected in (
        "Chute dans la chambre à 6 h",
        "Hôpital Nord-Ouest",
        "Petit déjeuner complet à 7 h 30",
        "Appareil auditif gauche",
        "Téléphone portable",
        "138/76 mmHg",
        "14/03/2026 06:20",
        "(pas du jour)",  # the glycaemia of the day before says so
    ):
        assert expected in text, expected
    assert text.index("Traitements en cours") < text.index("Motif du transfert") < text.index("À l'arrivée")


def test_a_fludt_with_bare_transfer_facts_says_non_renseigne() -> None:
    transfer = make_transfer(destination=None, last_meal=None, devices=(), belongings=(), comment=None)
    text = _flat(_text(render(make_record(vitals=()), "FLUDT", transfer, built_at=BUILT_AT)))
    assert "Destination Non renseigné" in text
    assert "Dernier repas Non renseigné" in text
    assert "Signes vitaux Non renseigné" in text


def test_a_custom_title() -> None:
    text = _text(render(make_record(), "DLU", title="DLU – copie pour le SAMU", built_at=BUILT_AT))
    assert "DLU – copie pour le SAMU" in text


def test_forty_treatments_flow_over_pages_none_clipped() -> None:
    treatments = tuple(
        Item(f"Médicament numéro {i:02d}", detail=f"{i} mg le matin, posologie longue " + "à adapter " * (i % 4))
        for i in range(1, 41)
    )
    data = render(make_record(treatments=treatments), "DLU", built_at=BUILT_AT)
    pages = _pages(data)
    assert len(pages) >= 2
    # the table starts on page 1 under its title (it does not jump to page 2 and leave page 1 half blank)
    assert "Traitements en cours (40)" in pages[0] and "Médicament numéro 01" in pages[0]
    text = _flat("\n".join(pages))
    for i in range(1, 41):
        assert f"Médicament numéro {i:02d}" in text
    # the column heads repeat where the table goes on
    assert sum(page.count("Posologie") for page in pages) >= 2
    # every page carries its number and the resident
    for n, page in enumerate(pages, start=1):
        flat = _flat(page)
        assert f"Page {n}/{len(pages)}" in flat
        assert "LEFÈVRE Hélène – née le 21/05/1938" in flat
        assert "Document généré par le DUI" in flat


def test_many_contacts_and_long_text_flow_too() -> None:
    relatives = tuple(Person(f"Parent{i}", "Jean", "Neveu", phone=f"06 00 00 00 {i:02d}") for i in range(30))
    record = make_record(notify=relatives, comment="Une remarque très longue. " * 300)
    pages = _pages(render(record, "DLU", built_at=BUILT_AT))
    text = _flat("\n".join(pages))
    assert len(pages) >= 3
    for i in range(30):
        assert f"06 00 00 00 {i:02d}" in text
    assert text.count("Une remarque très longue.") == 300


def test_french_typography_survives() -> None:
    accents = "ÀÉÈÊËÎÏÔÙÛÜŸÇ àéèêëîïôùûüÿç"
    record = make_record(comment=f"Œdème, cœur, « Madame » l’appelle – Noël, Zoé, Françoise, {accents}")
    text = _text(render(record, "DLU", built_at=BUILT_AT))
    for word in ("Œdème", "cœur", "« Madame »", "l’appelle", "Noël", "ÀÉÈÊËÎÏÔÙÛÜŸÇ", "àéèêëîïôùûüÿç"):
        assert word in text, word


def test_characters_the_font_lacks_are_substituted_visibly() -> None:
    assert printable("Hélène Œuvray « l’œil » ≥ 2") == "Hélène Œuvray « l’œil » ≥ 2"
    assert printable("A → B") == "A -> B"
    assert printable("Ștefan") == "Stefan"  # comma below dropped, letter kept
    assert printable("SpO₂") == "SpO2"
    assert printable("王") == "?"  # never silently dropped
    record = make_record(comment="Ștefan → SpO₂ 王")
    text = _text(render(record, "DLU", built_at=BUILT_AT))
    assert "Stefan -> SpO2 ?" in text


def test_markup_in_the_record_is_text() -> None:
    record = make_record(comment="<b>gras</b> & <font size=40>x</font>")
    text = _text(render(record, "DLU", built_at=BUILT_AT))
    assert "<b>gras</b> & <font size=40>x</font>" in text


def test_same_record_same_bytes(dlu: bytes) -> None:
    assert render(make_record(), "DLU", built_at=BUILT_AT) == dlu
    later = render(make_record(), "DLU", built_at=datetime(2026, 3, 15, 8, 2, tzinfo=UTC))
    assert later != dlu


def test_metadata(dlu: bytes) -> None:
    reader = pypdf.PdfReader(io.BytesIO(dlu))
    meta = reader.metadata
    assert meta is not None
    assert meta.title == "Dossier de liaison d'urgence (DLU)"
    assert meta.author == "EHPAD Les Tilleuls (démo)"
    assert meta.subject is not None and "LEFÈVRE Hélène" in meta.subject
    assert meta.get("/CreationDate") == "D:20260314090200+01'00'"
    assert reader.trailer["/Root"]["/Lang"] == "fr-FR"
    # fonts embedded (no base-14 font left to the reader's substitution)
    fonts = reader.pages[0]["/Resources"]["/Font"]
    for ref in fonts.values():
        font = ref.get_object()
        descendant = font["/DescendantFonts"][0].get_object() if "/DescendantFonts" in font else font
        descriptor = descendant["/FontDescriptor"].get_object()
        assert any(k in descriptor for k in ("/FontFile", "/FontFile2", "/FontFile3"))


def test_page_one_renders_to_a_non_blank_image(dlu: bytes) -> None:
    pdf = pdfium.PdfDocument(dlu)
    try:
        image = pdf[0].render(scale=1).to_pil().convert("L")
    finally:
        pdf.close()
    assert image.size[0] in (595, 596) and image.size[1] == 842
    low, high = image.getextrema()
    assert low < 60 and high > 240  # dark text on a white page
    dark = sum(image.histogram()[:128])
    assert dark > 5000


def test_the_ins_oid_kind_is_only_printed_when_known() -> None:
    record = make_record(identity=replace(make_record().identity, ins_oid="1.2.250.1.213.1.4.8"))
    text = _flat(_text(render(record, "DLU", built_at=BUILT_AT)))
    assert "INS-NIR – OID 1.2.250.1.213.1.4.8" in text
    assert "de test" not in text


def test_overlong_values_wrap_or_split_never_fail() -> None:
    """A cell taller than a page splits inside the row; footer lines too long for the page are cut with "…"."""
    long = "posologie très longue " * 400
    record = make_record(
        treatments=(Item("Médicament au long cours", detail=long),),
        notify=(Person("Parent", long, "Fils", phone="06 00 00 00 00"),),
        establishment=replace(make_record().establishment, name="EHPAD " + "des Tilleuls " * 40),
    )
    data = render(record, "FLUDT", make_transfer(reason=long), built_at=BUILT_AT)
    pages = _pages(data)
    text = _flat("\n".join(pages))
    assert text.count("posologie") == 1200  # (a phrase may straddle a page break, a word does not)
    for page in pages:
        assert "Document généré par le DUI" in page
        assert "…" in page  # the footer line naming the establishment was cut to the width of the page
