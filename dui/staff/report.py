"""The direction's indicators as a printed report: a PDF (a title page with the figures and the GIR chart, then a
page of charts) or one PNG (the page of charts), drawn with matplotlib.

The figures are ``dui.staff.indicators.compute``'s, unchanged (the same numbers as ``GET /api/indicators``), written
the French way (``583,3``; ``100,0 %``) for the direction who reads them. Drawing uses matplotlib's object API on
the Agg canvas (no pyplot: no global state, no display) and DejaVu Sans, the font matplotlib ships in its package
(embedded as TrueType in the PDF, so that the text can be searched and copied). Nothing here reads the database.
"""

from __future__ import annotations

import io
import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

A4 = (8.27, 11.69)  # inches, portrait
LANDSCAPE = (11.69, 8.27)
# DejaVu Sans: in matplotlib's own package (mpl-data/fonts); TrueType (42) in the PDF, so the text is text
STYLE: dict[Any, Any] = {"font.family": "DejaVu Sans", "pdf.fonttype": 42, "axes.spines.top": False,
                         "axes.spines.right": False}
MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
          "novembre", "décembre")
BLUE, GREEN, ORANGE, RED, GREY = "#1f5fa8", "#2e8b57", "#e69500", "#c0392b", "#9aa5b1"


def render(indicators: dict[str, Any], fmt: str, tz: ZoneInfo) -> bytes:
    """The report as ``pdf`` (two A4 pages) or ``png`` (the charts, landscape A4 at 150 dpi)."""
    import matplotlib  # here: only a report pays for matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    # fontTools, which subsets the fonts embedded in the PDF, logs at INFO the glyphs of every text it embeds: what
    # the report says must not reach the logs
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    out = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        if fmt == "png":
            figure = charts_page(indicators, tz)
            figure.savefig(out, format="png", dpi=150)  # drawn on the Agg canvas
        elif fmt == "pdf":
            metadata = {"Title": f"Indicateurs {indicators['month']} - {indicators['establishment']}",
                        "Creator": "DUI", "CreationDate": None}
            with PdfPages(out, metadata=metadata) as pdf:
                pdf.savefig(title_page(indicators, tz))
                pdf.savefig(charts_page(indicators, tz))
        else:
            raise ValueError(f"unknown report format {fmt!r}")
    return out.getvalue()


def number(value: float | None, digits: int = 1) -> str:
    """``583,3``; a dash for nothing."""
    if value is None:
        return "-"
    text = f"{value:,.{digits}f}".replace(",", "\u202f").replace(".", ",")
    return text


def share(value: float | None) -> str:
    return "-" if value is None else f"{number(value * 100)} %"


def month_name(month: str) -> str:
    year, number_ = month.split("-")
    return f"{MONTHS[int(number_) - 1]} {year}"


def figures(ind: dict[str, Any]) -> list[tuple[str, str]]:
    """The lines of the title page: (label, value)."""
    gmp, pmp, falls, dlu, dmp = ind["gmp"], ind["pmp"], ind["falls"], ind["dlu"], ind["dmp"]
    transfers = ind["hospital_transfers"]
    return [
        ("Places (chambres)", str(ind["places"])),
        ("Résidents présents", str(ind["residents_present"])),
        ("Journées de présence", number(ind["resident_days"])),
        ("Taux d'occupation", share(ind["occupancy"])),
        ("GMP (GIR moyen pondéré)", f"{number(gmp['value'])}  ({gmp['evaluated']} évalués, "
                                    f"{gmp['not_evaluated']} sans évaluation)"),
        ("PMP (PATHOS moyen pondéré)", "non renseigné" if pmp["status"] == "not recorded" else
         f"{number(pmp['value'])}  ({pmp['recorded']} résidents)"),
        ("Chutes", f"{falls['count']}  ({number(falls['per_1000_resident_days'], 2)} pour 1 000 journées)"),
        ("Transferts hospitaliers (FLUDT)", f"{transfers['fludt']}  ({transfers['residents']} résidents)"),
        ("DLU à jour", f"{dlu['current']} / {ind['residents_present']}  ({share(dlu['freshness'])} ; "
                       f"{dlu['stale']} à refaire, {dlu['missing']} absents)"),
        ("DLU envoyés au DMP", f"{dmp['reached_dmp']} / {dmp['dlu_built']} construits dans le mois  "
                               f"({share(dmp['rate'])})"),
    ]


def title_page(ind: dict[str, Any], tz: ZoneInfo) -> Any:
    """Page 1: who, when, the figures, and the GIR of the residents."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=A4)
    figure.text(0.08, 0.93, "Indicateurs de direction", fontsize=22, weight="bold", color=BLUE)
    figure.text(0.08, 0.895, f"{ind.get('name') or 'Établissement'}  -  FINESS {ind['establishment']}", fontsize=13)
    until = _day(ind["until"], tz, last=ind["complete"]) + ("" if ind["complete"] else " (mois en cours)")
    figure.text(0.08, 0.865, f"{month_name(ind['month']).capitalize()} : du {_day(ind['from'], tz)} au {until}",
                fontsize=12, color="#333333")
    y = 0.81
    for label, value in figures(ind):
        figure.text(0.08, y, label, fontsize=11, weight="bold")
        figure.text(0.45, y, value, fontsize=11)
        y -= 0.033
    axes = figure.add_axes((0.12, 0.12, 0.8, 0.34))
    _gir_chart(axes, ind)
    figure.text(0.08, 0.04, f"Calculé le {_day(ind['as_of'], tz)} sur l'index de recherche du DUI ; les DLU à jour "
                            "le sont ce jour-là (définitions : docs/staff-api.md, « Indicators »).", fontsize=8,
                color="#555555")
    return figure


def charts_page(ind: dict[str, Any], tz: ZoneInfo) -> Any:
    """The charts: GIR, occupancy, falls and transfers, the DLU and the DMP."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=LANDSCAPE)
    figure.suptitle(f"{ind.get('name') or ind['establishment']}  -  {month_name(ind['month'])}", fontsize=16,
                    weight="bold", color=BLUE)
    grid = figure.add_gridspec(2, 2, left=0.08, right=0.96, bottom=0.09, top=0.86, hspace=0.5, wspace=0.4)
    _gir_chart(figure.add_subplot(grid[0, 0]), ind)
    _occupancy_chart(figure.add_subplot(grid[0, 1]), ind)
    _events_chart(figure.add_subplot(grid[1, 0]), ind)
    _documents_chart(figure.add_subplot(grid[1, 1]), ind, tz)
    return figure


def _gir_chart(axes: Any, ind: dict[str, Any]) -> None:
    by_gir = ind["gmp"]["by_gir"]
    levels = sorted(by_gir, key=int)
    counts = [by_gir[g] for g in levels]
    bars = axes.bar([f"GIR {g}" for g in levels], counts, color=BLUE)
    axes.bar_label(bars, labels=[str(c) for c in counts], padding=2)
    axes.set_title(f"Résidents par GIR  -  GMP {number(ind['gmp']['value'])}", fontsize=12)
    axes.set_ylabel("résidents")
    axes.set_ylim(0, max([*counts, 1]) * 1.25)
    axes.yaxis.get_major_locator().set_params(integer=True)


def _occupancy_chart(axes: Any, ind: dict[str, Any]) -> None:
    capacity = ind["places"] * ind["days"]
    occupied = ind["resident_days"]
    bars = axes.barh(["Capacité", "Occupées"], [capacity, occupied], color=[GREY, GREEN])
    axes.bar_label(bars, labels=[number(capacity, 0), number(occupied, 0)], padding=3)
    axes.set_title(f"Journées  -  occupation {share(ind['occupancy'])}", fontsize=12)
    axes.set_xlabel(f"{ind['places']} places x {number(ind['days'], 0)} jours")
    axes.set_xlim(0, max(capacity, occupied, 1) * 1.2)


def _events_chart(axes: Any, ind: dict[str, Any]) -> None:
    falls, transfers = ind["falls"]["count"], ind["hospital_transfers"]["fludt"]
    bars = axes.bar(["Chutes", "Transferts\nhospitaliers"], [falls, transfers], color=[ORANGE, RED])
    axes.bar_label(bars, labels=[str(falls), str(transfers)], padding=2)
    axes.set_title(f"Chutes : {number(ind['falls']['per_1000_resident_days'], 2)} pour 1 000 journées",
                   fontsize=12)
    axes.set_ylim(0, max(falls, transfers, 1) * 1.25)
    axes.yaxis.get_major_locator().set_params(integer=True)


def _documents_chart(axes: Any, ind: dict[str, Any], tz: ZoneInfo) -> None:
    dlu, dmp = ind["dlu"], ind["dmp"]
    rows = [("Résidents\n(leur DLU)", [(dlu["current"], GREEN), (dlu["stale"], ORANGE), (dlu["missing"], GREY)],
             "aucun résident présent"),
            ("DLU du mois\n(envoi au DMP)", [(dmp["reached_dmp"], GREEN), (dmp["queued"], ORANGE),
                                             (dmp["refused"], RED), (dmp["not_queued"], GREY)],
             "aucun DLU construit dans le mois")]
    legend = {GREEN: "à jour / envoyé", ORANGE: "à refaire / en attente", RED: "refusé", GREY: "absent / non envoyé"}
    labelled: set[str] = set()
    widest = max(sum(count for count, _ in parts) for _, parts, _ in rows)
    for y, (_, parts, empty) in enumerate(rows):
        left = 0
        for count, color in parts:
            if count:
                axes.barh(y, count, left=left, height=0.6, color=color,
                          label=None if color in labelled else legend[color])
                axes.text(left + count / 2, y, str(count), ha="center", va="center", color="white", weight="bold")
                labelled.add(color)
                left += count
        if not left:
            axes.text(0.02, y, empty, va="center", color="#555555", transform=axes.get_yaxis_transform())
    axes.set_yticks(range(len(rows)), [name for name, _, _ in rows])
    axes.set_ylim(2.3, -0.6)  # the first row on top; room below the bars for the legend
    axes.set_xlim(0, max(widest, 1) * 1.05)
    axes.set_title(f"DLU : {share(dlu['freshness'])} à jour ; DMP : {share(dmp['rate'])}", fontsize=12)
    axes.set_xlabel(f"documents (état au {_day(ind['as_of'], tz)})")
    axes.xaxis.get_major_locator().set_params(integer=True)
    if labelled:
        axes.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)


def _day(instant: str, tz: ZoneInfo, last: bool = False) -> str:
    """The day of ``instant`` in the establishment; ``last``: of the instant just before (a month's end is the
    first instant of the next: its last day is the one before)."""
    moment = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    if last:
        moment -= timedelta(milliseconds=1)
    return moment.astimezone(tz).strftime("%d/%m/%Y")
