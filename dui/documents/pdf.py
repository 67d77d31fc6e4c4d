"""The printed DLU and FLUDT: one or two A4 pages a night nurse and an emergency doctor read at a glance.

``render(record, "DLU")`` or ``render(record, "FLUDT", transfer)`` returns the PDF bytes. The renderer reads the
``ResidentRecord`` only (``dui.documents.record``), so the printed form says what the CDA says.

What is printed, in this order:

1. a header band: the document's title, the establishment (name, FINESS, phone), and when the document was made
   from which state of the record ("Établi le … à partir du dossier à jour du …");
2. the identity traits RNIV requires on every printed document (nom de naissance in capitals, premier prénom de
   naissance, liste des prénoms de naissance, date de naissance, sexe, lieu de naissance with its INSEE code), the
   name and given name used when they are known, and the matricule INS with the identity status; when the identity is
   not qualified the matricule is not printed (it may not be shared) and the local identifier names the resident;
3. first and highlighted, allergies ("Aucune allergie connue" only when the record says so; an empty list is
   printed as not recorded, to be checked) and the current treatments with their posology;
4. for the FLUDT, the transfer facts the nurse gives (motif, destination, dernier repas, dispositifs, objets
   personnels) and the latest vital signs;
5. "À l'arrivée" (advance directives, palliative care, dispositions, preferred hospital), "Qui appeler" (médecin
   traitant, médecin coordonnateur, personne de confiance, personne à prévenir, with phones);
6. pathologies, antécédents, état du patient, résultats, vaccinations, documents joints, commentaire.

A section with nothing prints "Non renseigné". Every page carries "page n/N", the resident's birth name, first birth
given name and birth date, so a loose page is never misfiled; pages after the first repeat the title and the
resident in a running header. Long lists flow over as many pages as they need; tables repeat their column heads.

Fonts: Bitstream Vera, shipped with reportlab, embedded (subset) in the file; no system font, no network. A character
the font cannot draw is replaced by a close one (``→`` by ``->``, ``ș`` by ``s``...) or, failing that, by ``?`` —
visibly, never dropped (``printable``).

Output is deterministic: ``invariant`` mode, and the creation date is ``built_at``, so the same record rendered at
the same ``built_at`` gives the same bytes.

PDF/A: the open-source reportlab cannot produce a certified PDF/A (no XMP conformance declaration, no output intent
with an ICC profile, no tagged structure); the file does not claim to be PDF/A. What reportlab allows is done: fonts
embedded, no transparency, no encryption, no JavaScript, document information (title, author = establishment,
subject, creator) and the catalog language ``fr-FR``. Where a PDF/A-1 copy is required (XDS-SD N1, MSSanté), convert
this file with a certified tool.

Health data never goes to the logs: this module logs nothing.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from functools import lru_cache, partial
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    CondPageBreak,
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from dui.clock import utc_now
from dui.documents.record import Establishment, Identity, Item, Person, ResidentRecord, Transfer

KINDS = {
    "DLU": "Dossier de liaison d'urgence (DLU)",
    "FLUDT": "Fiche de liaison d'urgence – transfert (FLUDT)",
}
NOT_GIVEN = "Non renseigné"
NO_ALLERGY = "Aucune allergie connue"
ALLERGY_NOT_GIVEN = "Allergies non renseignées dans le dossier : à vérifier"
PARIS = ZoneInfo("Europe/Paris")

PAGE_W, PAGE_H = A4
MARGIN_X = 14 * mm
MARGIN_TOP = 14 * mm
MARGIN_BOTTOM = 18 * mm
WIDTH = PAGE_W - 2 * MARGIN_X

# Colours print legibly in grey on a black-and-white printer: light tints behind dark text, strong borders.
INK = colors.HexColor("#111111")
MUTED = colors.HexColor("#555555")
RULE = colors.HexColor("#9AA5B1")
BAND = colors.HexColor("#E4EBF2")
HEAD = colors.HexColor("#1F3A5F")
ALERT = colors.HexColor("#B00020")
ALERT_TINT = colors.HexColor("#FCE8EC")
CALM_TINT = colors.HexColor("#EEF5EE")
CALM = colors.HexColor("#2E6B34")

FONT = "DUI-Sans"
FONT_BOLD = "DUI-Sans-Bold"

SEX = {"female": "Féminin", "male": "Masculin", "other": "Autre", "unknown": "Inconnu"}
BORN = {"female": "née", "male": "né"}
INS_KIND = {
    "1.2.250.1.213.1.4.8": "INS-NIR",
    "1.2.250.1.213.1.4.9": "INS-NIA",
    "1.2.250.1.213.1.4.10": "INS-NIR de test",
    "1.2.250.1.213.1.4.11": "INS-NIR de démonstration",
}

# Replacements for characters the font has no glyph for, tried before the Unicode decomposition.
_SUBSTITUTES = {
    "→": "->", "←": "<-", "↑": "^", "↓": "v", "⇒": "=>", "≠": "!=", "≈": "~", "×": "x", "✓": "v", "✔": "v",
    "‐": "-", "‑": "-", "‒": "-", "−": "-", "\u202f": "\u00a0", "\u2009": " ", "\u2007": " ", "\u200b": "",
    "\u00ad": "", "ʼ": "’", "′": "'", "″": '"', "•": "-", "·": ".", "●": "-", "▪": "-",
}  # fmt: skip


def render(
    record: ResidentRecord,
    kind: str,
    transfer: Transfer | None = None,
    *,
    title: str | None = None,
    built_at: datetime | None = None,
) -> bytes:
    """The PDF of the ``kind`` document ("DLU" or "FLUDT") of ``record``; a FLUDT needs the ``transfer`` facts."""
    if kind not in KINDS:
        raise ValueError(f"unknown document kind {kind!r}: DLU or FLUDT")
    if kind == "FLUDT" and transfer is None:
        raise ValueError("a FLUDT needs the transfer facts")
    if kind == "DLU" and transfer is not None:
        raise ValueError("a DLU carries no transfer; render a FLUDT")
    _fonts()
    built = built_at or utc_now()
    heading = title or KINDS[kind]
    ident = record.identity
    who = f"{ident.birth_family.upper()} {ident.first_given}"
    born = f"{BORN.get(ident.sex, 'né(e)')} le {ident.birth_date:%d/%m/%Y}"

    story: list[Flowable] = []
    story += _header(heading, record.establishment, record.as_of, built)
    story += _identity(ident, record, built)
    story += _allergies(record.allergies, record.no_known_allergy)
    story += _treatments(record.treatments)
    if transfer is not None:
        story += _transfer(transfer, record.vitals, built)
    story += _arrival(record)
    story += _contacts(record)
    for name, items in (
        ("Pathologies actives", record.pathologies),
        ("Antécédents", record.antecedents),
        ("État du patient", record.state),
        ("Résultats d'examens", record.results),
        ("Vaccinations", record.vaccinations),
        ("Documents joints", record.attached),
    ):
        story += _items_section(name, items)
    story += _section("Commentaire", [_para(record.comment)] if record.comment else [_none()])

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN_X,
        rightMargin=MARGIN_X,
        topMargin=MARGIN_TOP,
        bottomMargin=MARGIN_BOTTOM,
        title=printable(heading),
        author=printable(record.establishment.name),
        subject=printable(f"{KINDS[kind]} – {who}, {born}"),
        creator="DUI – dossier usager informatisé",
        keywords=f"{kind}, EHPAD, DLU-EHPAD",
        lang="fr-FR",
        invariant=1,
        initialFontName=FONT,
        initialFontSize=9,
    )
    canvasmaker = partial(
        _PagedCanvas,
        created=built,
        running=printable(f"{heading} – {who}, {born} (suite)"),
        resident=printable(f"{who} – {born}"),
        generated=printable(f"Document généré par le DUI le {_when(built)} – {record.establishment.name}"),
    )
    doc.build(story, canvasmaker=canvasmaker)
    return buffer.getvalue()


# -- text ------------------------------------------------------------------------------------------------------------


def printable(text: str) -> str:
    """``text`` with every character the embedded font cannot draw replaced by a close one, or by ``?``."""
    covered = _coverage()
    if all(ord(ch) in covered or ch in "\n\t" for ch in text):
        return text
    out: list[str] = []
    for ch in text:
        if ord(ch) in covered or ch in "\n\t":
            out.append(ch)
            continue
        sub = _SUBSTITUTES.get(ch)
        if sub is None:
            decomposed = unicodedata.normalize("NFKD", ch)
            base = "".join(c for c in decomposed if not unicodedata.combining(c))
            sub = base if base and all(ord(c) in covered for c in base) else "?"
        out.append(sub)
    return "".join(out)


def _markup(text: str) -> str:
    """``text`` safe for a Paragraph: printable, escaped, line breaks kept."""
    return escape(printable(text)).replace("\n", "<br/>")


@lru_cache(maxsize=1)
def _fonts() -> tuple[str, str]:
    pdfmetrics.registerFont(TTFont(FONT, "Vera.ttf"))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, "VeraBd.ttf"))
    pdfmetrics.registerFont(TTFont(FONT + "-Italic", "VeraIt.ttf"))
    pdfmetrics.registerFont(TTFont(FONT_BOLD + "-Italic", "VeraBI.ttf"))
    pdfmetrics.registerFontFamily(
        FONT, normal=FONT, bold=FONT_BOLD, italic=FONT + "-Italic", boldItalic=FONT_BOLD + "-Italic"
    )
    return FONT, FONT_BOLD


@lru_cache(maxsize=1)
def _coverage() -> frozenset[int]:
    """The code points all four faces draw."""
    _fonts()
    faces = [pdfmetrics.getFont(name) for name in (FONT, FONT_BOLD, FONT + "-Italic", FONT_BOLD + "-Italic")]
    common: set[int] | None = None
    for face in faces:
        points = set(face.face.charToGlyph)
        common = points if common is None else common & points
    return frozenset((common or set()) - set(range(32)))


def _style(name: str, **kw: Any) -> ParagraphStyle:
    base: dict[str, Any] = {"fontName": FONT, "bulletFontName": FONT, "fontSize": 9, "leading": 11.5, "textColor": INK}
    base.update(kw)
    return ParagraphStyle(name, **base)


BODY = _style("body")
SMALL = _style("small", fontSize=7.5, leading=9.5, textColor=MUTED)
LABEL = _style("label", fontSize=7.5, leading=9.5, textColor=MUTED)
VALUE = _style("value", fontName=FONT_BOLD, fontSize=9.5, leading=12)
TITLE = _style("title", fontName=FONT_BOLD, fontSize=13, leading=16, textColor=HEAD)
ESTAB = _style("estab", fontName=FONT_BOLD, fontSize=9.5, leading=12, alignment=TA_RIGHT)
ESTAB_SMALL = _style("estab-small", fontSize=8, leading=10, alignment=TA_RIGHT)
NAME = _style("name", fontName=FONT_BOLD, fontSize=15, leading=18)
SECTION = _style("section", fontName=FONT_BOLD, fontSize=10.5, leading=13, textColor=HEAD)
ALERT_HEAD = _style("alert-head", fontName=FONT_BOLD, fontSize=11, leading=14, textColor=ALERT)
CALM_TEXT = _style("calm", fontName=FONT_BOLD, fontSize=10.5, leading=13, textColor=CALM)
CELL_HEAD = _style("cell-head", fontName=FONT_BOLD, fontSize=7.5, leading=9.5, textColor=MUTED)
CELL = _style("cell", fontSize=9, leading=11)
CELL_BOLD = _style("cell-bold", fontName=FONT_BOLD, fontSize=9, leading=11)
PHONE = _style("phone", fontName=FONT_BOLD, fontSize=10, leading=12)
NONE = _style("none", fontSize=9, leading=11.5, textColor=MUTED)
BULLET = _style("bullet", leftIndent=11, bulletIndent=1)


def _table_style(commands: list[tuple[Any, ...]]) -> TableStyle:
    """A table style in the embedded font: reportlab sets a cell's font even when the cell holds a Paragraph."""
    return TableStyle([("FONTNAME", (0, 0), (-1, -1), FONT), *commands])


def _para(text: str | None, style: ParagraphStyle = BODY) -> Paragraph:
    return Paragraph(_markup(text) if text else escape(NOT_GIVEN), style)


def _none() -> Paragraph:
    return Paragraph(escape(NOT_GIVEN), NONE)


def _when(moment: datetime) -> str:
    """dd/mm/yyyy à hh:mm, in French local time when the moment carries its offset."""
    local = moment.astimezone(PARIS) if moment.tzinfo else moment
    return f"{local:%d/%m/%Y} à {local:%H:%M}"


def _fhir_date(value: str | None) -> str | None:
    """A FHIR date or dateTime as a French reader writes it: 2019, 03/2019, 12/03/2019, 12/03/2019 08:30."""
    if not value:
        return None
    try:
        if "T" in value:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            local = moment.astimezone(PARIS) if moment.tzinfo else moment
            return f"{local:%d/%m/%Y %H:%M}"
        parts = value.split("-")
        if len(parts) == 1:
            return f"{int(parts[0]):04d}"
        if len(parts) == 2:
            return f"{int(parts[1]):02d}/{int(parts[0]):04d}"
        return f"{date.fromisoformat(value):%d/%m/%Y}"
    except ValueError:
        return value


def _span(item: Item) -> str | None:
    start, end = _fhir_date(item.start), _fhir_date(item.end)
    if start and end:
        return f"du {start} au {end}"
    if end:
        return f"jusqu'au {end}"
    return start


def _age(born: date, at: datetime) -> int:
    day = (at.astimezone(PARIS) if at.tzinfo else at).date()
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


# -- blocks ----------------------------------------------------------------------------------------------------------


def _header(heading: str, estab: Establishment, as_of: datetime, built: datetime) -> list[Flowable]:
    place = " ".join(p for p in (estab.postal, estab.city) if p)
    right = [Paragraph(_markup(estab.name), ESTAB)]
    for line in (estab.line, place):
        if line:
            right.append(Paragraph(_markup(line), ESTAB_SMALL))
    right.append(Paragraph(_markup(f"FINESS {estab.finess}"), ESTAB_SMALL))
    right.append(Paragraph(_markup(f"Tél. {estab.phone or NOT_GIVEN}"), ESTAB))
    left = [
        Paragraph(_markup(heading), TITLE),
        Spacer(1, 2),
        Paragraph(
            f"Établi le <b>{_when(built)}</b><br/>à partir du dossier à jour du {_when(as_of)}",
            _style("made", fontSize=8.5, leading=11),
        ),
    ]
    band = Table([[left, right]], colWidths=[WIDTH * 0.68, WIDTH * 0.32], splitInRow=1)
    band.setStyle(
        _table_style(
            [
                ("BACKGROUND", (0, 0), (-1, -1), BAND),
                ("LINEBELOW", (0, 0), (-1, -1), 1.5, HEAD),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 6),
                ("RIGHTPADDING", (0, 0), (-1, -1), 6),
                ("TOPPADDING", (0, 0), (-1, -1), 5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
            ]
        )
    )
    return [band, Spacer(1, 5)]


def _identity(ident: Identity, record: ResidentRecord, built: datetime) -> list[Flowable]:
    born = BORN.get(ident.sex, "né(e)")
    used = " ".join(p for p in (ident.used_given, ident.used_family.upper() if ident.used_family else None) if p)
    name_line = f"{ident.birth_family.upper()} {ident.first_given}"
    sub = f"{born} le {ident.birth_date:%d/%m/%Y} ({_age(ident.birth_date, built)} ans)"
    if used:
        what = (
            "nom et prénom utilisés"
            if ident.used_family and ident.used_given
            else ("nom utilisé" if ident.used_family else "prénom utilisé")
        )
        sub += f" – {what} : {used}"
    place = ident.birth_place or NOT_GIVEN
    if ident.birth_place_code:
        place += f" (code INSEE {ident.birth_place_code})"
    cells: list[tuple[str, str]] = [
        ("Nom de naissance", ident.birth_family.upper()),
        ("Premier prénom de naissance", ident.first_given),
        ("Prénoms de naissance", ident.birth_given),
        ("Date de naissance", f"{ident.birth_date:%d/%m/%Y}"),
        ("Sexe", SEX.get(ident.sex, ident.sex)),
        ("Lieu de naissance", place),
    ]
    if ident.used_family:
        cells.append(("Nom utilisé", ident.used_family.upper()))
    if ident.used_given:
        cells.append(("Prénom utilisé", ident.used_given))
    if len(cells) % 2:
        cells.append(("", ""))
    rows = []
    for i in range(0, len(cells), 2):
        row: list[Flowable] = []
        for label, value in cells[i : i + 2]:
            row += [Paragraph(_markup(label), LABEL), Paragraph(_markup(value), VALUE)]
        rows.append(row)
    if ident.ins:
        kind = INS_KIND.get(ident.ins_oid or "", "")
        ins_text = f"<b>Matricule INS : {_markup(ident.ins)}</b> ({_markup(ident.status_label)})"
        if kind:
            ins_text += f" – {_markup(kind)}"
        if ident.ins_oid:
            ins_text += f" – OID {_markup(ident.ins_oid)}"
        ins_rows = [[Paragraph(ins_text, BODY)]]
    else:
        ins_rows = [
            [Paragraph(f"<b>Statut de l'identité : {_markup(ident.status_label)}</b>", BODY)],
            [
                Paragraph(
                    f"<b>INS non communicable : identité non qualifiée</b> – identifiant local : "
                    f"{_markup(ident.local_id)}",
                    BODY,
                )
            ],
        ]
    for span_row in ins_rows:
        rows.append([span_row[0], "", "", ""])
    if record.stay_start:
        rows.append([Paragraph(_markup(f"Entrée dans l'établissement : {_fhir_date(record.stay_start)}"), BODY)])
        rows[-1] += ["", "", ""]
    traits = Table(rows, colWidths=[WIDTH * 0.16, WIDTH * 0.34, WIDTH * 0.17, WIDTH * 0.33], splitInRow=1)
    first_span = len(rows) - len(ins_rows) - (1 if record.stay_start else 0)
    style = [
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("BOX", (0, 0), (-1, -1), 0.75, RULE),
        ("LINEABOVE", (0, first_span), (-1, first_span), 0.5, RULE),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
    ]
    for r in range(first_span, len(rows)):
        style.append(("SPAN", (0, r), (-1, r)))
    traits.setStyle(_table_style(style))
    return [
        KeepTogether(
            [
                Paragraph(_markup(name_line), NAME),
                Paragraph(_markup(sub), _style("sub", fontSize=9.5, leading=12)),
                Spacer(1, 3),
                traits,
            ]
        ),
        Spacer(1, 6),
    ]


def _section(name: str, body: Sequence[Flowable], *, style: ParagraphStyle = SECTION) -> list[Flowable]:
    """A titled section; the title never ends a page on its own."""
    head = Table([[Paragraph(_markup(name), style)]], colWidths=[WIDTH])
    head.setStyle(
        _table_style(
            [
                ("LINEBELOW", (0, 0), (-1, -1), 0.75, HEAD),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 0), (-1, -1), 0),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
            ]
        )
    )
    first, rest = (body[0], list(body[1:])) if body else (_none(), [])
    if isinstance(first, Table):
        # a table splits over pages by itself (its column heads repeat): keep room for the title and a few rows,
        # not the whole table, which would leave the rest of the page blank
        return [CondPageBreak(35 * mm), head, Spacer(1, 2), first, *rest, Spacer(1, 6)]
    return [CondPageBreak(14 * mm), KeepTogether([head, Spacer(1, 2), first]), *rest, Spacer(1, 6)]


def _table(
    heads: Sequence[str],
    rows: Iterable[Sequence[str | None]],
    widths: Sequence[float],
    *,
    bold_first: bool = True,
    box: colors.Color = RULE,
) -> Table:
    data: list[list[Flowable]] = [[Paragraph(_markup(h), CELL_HEAD) for h in heads]]
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            style = CELL_BOLD if i == 0 and bold_first else CELL
            cells.append(Paragraph(_markup(value), style) if value else Paragraph("–", NONE))
        data.append(cells)
    table = Table(data, colWidths=[WIDTH * w for w in widths], repeatRows=1, splitInRow=1)
    table.setStyle(
        _table_style(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.75, box),
                ("LINEBELOW", (0, 1), (-1, -1), 0.25, RULE),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
                ("LEFTPADDING", (0, 0), (-1, -1), 3),
                ("RIGHTPADDING", (0, 0), (-1, -1), 3),
            ]
        )
    )
    return table


def _allergies(allergies: Sequence[Item], none_known: bool) -> list[Flowable]:
    """The allergies; an empty list prints "Aucune allergie connue" only when the record says so (a coded "no known
    allergy"), else a warning that none was recorded: an allergy nobody wrote down is not an absent one."""
    if not allergies:
        tint, border = (CALM_TINT, CALM) if none_known else (ALERT_TINT, ALERT)
        words = NO_ALLERGY if none_known else ALLERGY_NOT_GIVEN
        box = Table([[Paragraph(escape(words), CALM_TEXT)]], colWidths=[WIDTH])
        box.setStyle(
            _table_style(
                [
                    ("BACKGROUND", (0, 0), (-1, -1), tint),
                    ("BOX", (0, 0), (-1, -1), 1, border),
                    ("TOPPADDING", (0, 0), (-1, -1), 4),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 4),
                ]
            )
        )
        return [*_section("Allergies", [box], style=ALERT_HEAD)]
    table = _table(
        ("Allergie ou intolérance", "Réaction, gravité", "Depuis"),
        ((a.text, a.detail, _span(a)) for a in allergies),
        (0.42, 0.43, 0.15),
        box=ALERT,
    )
    table.setStyle(
        _table_style(
            [
                ("BACKGROUND", (0, 0), (-1, -1), ALERT_TINT),
                ("BOX", (0, 0), (-1, -1), 1.5, ALERT),
            ]
        )
    )
    return _section(f"ALLERGIES ({len(allergies)})", [table], style=ALERT_HEAD)


def _treatments(treatments: Sequence[Item]) -> list[Flowable]:
    if not treatments:
        return _section("Traitements en cours", [_none()], style=ALERT_HEAD)
    table = _table(
        ("Médicament", "Posologie", "Depuis"),
        ((t.text, t.detail, _span(t)) for t in treatments),
        (0.42, 0.43, 0.15),
        box=HEAD,
    )
    table.setStyle(_table_style([("BOX", (0, 0), (-1, -1), 1, HEAD)]))
    return _section(f"Traitements en cours ({len(treatments)})", [table], style=ALERT_HEAD)


def _facts(rows: Sequence[tuple[str, str | None]], *, strong: int = 0) -> Table:
    """Label / value lines, the first ``strong`` ones in bold; a missing value prints "Non renseigné"."""
    data = [
        [
            Paragraph(_markup(label), LABEL),
            Paragraph(_markup(value), CELL_BOLD if i < strong else CELL) if value else _none(),
        ]
        for i, (label, value) in enumerate(rows)
    ]
    table = Table(data, colWidths=[WIDTH * 0.24, WIDTH * 0.76], splitInRow=1)
    table.setStyle(
        _table_style(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, RULE),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
                ("LEFTPADDING", (0, 0), (-1, -1), 3),
            ]
        )
    )
    return table


def _transfer(transfer: Transfer, vitals: Sequence[Item], built: datetime) -> list[Flowable]:
    facts = _facts(
        [
            ("Motif du transfert", transfer.reason),
            ("Destination", transfer.destination),
            ("Dernier repas", transfer.last_meal),
            ("Dispositifs, prothèses", "\n".join(transfer.devices) or None),
            ("Objets personnels", "\n".join(transfer.belongings) or None),
            ("Commentaire de l'infirmier(ère)", transfer.comment),
        ],
        strong=2,
    )
    out = _section("Transfert", [facts])
    today = (built.astimezone(PARIS) if built.tzinfo else built).date()
    if vitals:
        rows = []
        for v in vitals:
            when = _fhir_date(v.start)
            if when and v.start and not when.startswith(f"{today:%d/%m/%Y}"):
                when += " (pas du jour)"
            rows.append((v.text, v.detail, when))
        body: list[Flowable] = [_table(("Signe vital", "Valeur", "Relevé le"), rows, (0.4, 0.3, 0.3))]
    else:
        body = [_none()]
    return out + _section("Signes vitaux", body)


def _items(items: Sequence[Item]) -> list[Flowable]:
    out: list[Flowable] = []
    for item in items:
        text = f"<b>{_markup(item.text)}</b>"
        if item.detail:
            text += f" – {_markup(item.detail)}"
        span = _span(item)
        if span:
            text += f' <font color="#555555">({_markup(span)})</font>'
        out.append(Paragraph(text, BULLET, bulletText="–"))
    return out


def _items_section(name: str, items: Sequence[Item]) -> list[Flowable]:
    return _section(name, _items(items) if items else [_none()])


def _arrival(record: ResidentRecord) -> list[Flowable]:
    def sub(label: str) -> Paragraph:
        return Paragraph(_markup(label), _style("sub-head", fontName=FONT_BOLD, fontSize=8.5, textColor=MUTED))

    body: list[Flowable] = [sub("Directives anticipées, soins palliatifs")]
    body += _items(record.directives) or [_none()]
    body.append(sub("Dispositions"))
    body += _items(record.dispositions) or [_none()]
    body.append(sub("Hôpital de préférence"))
    body.append(_para(record.preferred_hospital) if record.preferred_hospital else _none())
    return _section("À l'arrivée", body)


def _person_rows(slot: str, people: Sequence[Person]) -> list[list[Flowable]]:
    if not people:
        return [[Paragraph(_markup(slot), CELL_BOLD), _none(), _none()]]
    rows = []
    for p in people:
        role = slot if not p.role or p.role == slot else f"{slot} ({p.role})"
        name = " ".join(x for x in (p.family.upper(), p.given) if x)
        who = _markup(name)
        if p.rpps:
            who += f'<br/><font size="7.5" color="#555555">RPPS {_markup(p.rpps)}</font>'
        phone = Paragraph(_markup(p.phone), PHONE) if p.phone else _none()
        rows.append([Paragraph(_markup(role), CELL_BOLD), Paragraph(who, CELL), phone])
    return rows


def _contacts(record: ResidentRecord) -> list[Flowable]:
    rows: list[list[Flowable]] = [[Paragraph(h, CELL_HEAD) for h in ("Qui", "Nom", "Téléphone")]]
    rows += _person_rows("Médecin traitant", [record.gp] if record.gp else [])
    rows += _person_rows("Médecin coordonnateur", [record.coordinator] if record.coordinator else [])
    rows += _person_rows("Personne de confiance", record.trusted)
    rows += _person_rows("Personne à prévenir", record.notify)
    estab = record.establishment
    rows.append(
        [
            Paragraph("Établissement", CELL_BOLD),
            Paragraph(_markup(estab.name), CELL),
            Paragraph(_markup(estab.phone), PHONE) if estab.phone else _none(),
        ]
    )
    table = Table(rows, colWidths=[WIDTH * 0.3, WIDTH * 0.42, WIDTH * 0.28], repeatRows=1, splitInRow=1)
    table.setStyle(
        _table_style(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.75, HEAD),
                ("LINEBELOW", (0, 1), (-1, -1), 0.25, RULE),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
                ("LEFTPADDING", (0, 0), (-1, -1), 3),
            ]
        )
    )
    return _section("Qui appeler", [table])


# -- pages -----------------------------------------------------------------------------------------------------------


class _PagedCanvas(Canvas):  # type: ignore[misc]  # reportlab ships no type information
    """Draws the footer (and the running header after page 1) once the number of pages is known."""

    def __init__(
        self,
        *args: Any,
        created: datetime,
        running: str,
        resident: str,
        generated: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._pages: list[dict[str, Any]] = []
        self._running = running
        self._resident = resident
        self._generated = generated
        stamp = _pdf_date(created)
        self.setDateFormatter(lambda *_: stamp)

    def showPage(self) -> None:
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for state in self._pages:
            self.__dict__.update(state)
            self._decorate(total)
            super().showPage()
        super().save()

    def _decorate(self, total: int) -> None:
        number = self._pageNumber
        self.saveState()
        self.setStrokeColor(RULE)
        self.setLineWidth(0.5)
        y = MARGIN_BOTTOM - 6 * mm
        self.line(MARGIN_X, y, PAGE_W - MARGIN_X, y)
        self.setFillColor(INK)
        self.setFont(FONT_BOLD, 8.5)
        self.drawString(MARGIN_X, y - 10, _fit(self._resident, FONT_BOLD, 8.5, WIDTH - 60))
        self.drawRightString(PAGE_W - MARGIN_X, y - 10, f"Page {number}/{total}")
        self.setFont(FONT, 7)
        self.setFillColor(MUTED)
        self.drawString(MARGIN_X, y - 20, _fit(self._generated, FONT, 7, WIDTH))
        if number > 1:
            self.setFont(FONT, 7.5)
            top = PAGE_H - MARGIN_TOP + 4 * mm
            self.drawString(MARGIN_X, top, _fit(self._running, FONT, 7.5, WIDTH))
            self.line(MARGIN_X, top - 3, PAGE_W - MARGIN_X, top - 3)
        self.restoreState()


def _fit(text: str, font: str, size: float, width: float) -> str:
    """``text`` cut with an ellipsis to fit on one line of ``width`` points (the footer and running header)."""
    if pdfmetrics.stringWidth(text, font, size) <= width:
        return text
    while text and pdfmetrics.stringWidth(text + "…", font, size) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _pdf_date(moment: datetime) -> str:
    """A PDF date string (D:YYYYMMDDHHmmSS+HH'mm') of ``moment``, in French local time when it has an offset."""
    local = moment.astimezone(PARIS) if moment.tzinfo else moment
    offset = local.utcoffset()
    if offset is None:
        return f"D:{local:%Y%m%d%H%M%S}"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"D:{local:%Y%m%d%H%M%S}{sign}{abs(minutes) // 60:02d}'{abs(minutes) % 60:02d}'"


__all__: list[str] = ["ALLERGY_NOT_GIVEN", "KINDS", "NOT_GIVEN", "NO_ALLERGY", "printable", "render"]
