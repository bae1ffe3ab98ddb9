"""The leaderboard as one static HTML page: per table, a plot of mean recall against budget and the table.

Plots are inline SVG with real <text> labels, so the page is a single file that needs no server,
and the condenser names in a plot are searchable (and testable). The table is the markdown one,
cell for cell, rows in the same order (by budget, best first); the best mean at each budget (and
the ones tied with it) is bold, as in markdown. A cross-architecture table (sets condensed on one
backbone, evaluated on others) follows, as in markdown, with its same-architecture cells in italics.
"""
from __future__ import annotations

import html
import io
import re
from typing import Any

from tabulate import tabulate

from vlbench.board.markdown import COLUMNS, FOOTNOTES, HEADER, cells, cross_cells, cross_columns, cross_notes, marked
from vlbench.board.tables import CrossTable, Table, cross_tables, tables
from vlbench.core import VLBenchError

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 100em; padding: 0 1em; color: #222; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
th, td { padding: 0.3em 0.6em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 0; } figure svg { max-width: 100%; height: auto; }
"""
BOLD = re.compile(r"\*\*(.+?)\*\*")  # markdown's bold, which `cells` uses for the best mean
ITALIC = re.compile(r"\*(.+?)\*")  # markdown's italics (after bold): the same-architecture cells


def leaderboard_html(records: list[dict[str, Any]], split: str = "test") -> str:
    sections = [_section(t, i) for i, t in enumerate(tables(records, split))] or ["<p>No records yet.</p>"]
    sections += [_cross_section(t, i) for i, t in enumerate(cross_tables(records, split))]
    note = html.escape(HEADER.strip("_")).replace("`vlbench leaderboard`", "<code>vlbench leaderboard</code>")
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>vlbench leaderboard</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n<h1>vlbench leaderboard</h1>\n<p><em>{note}</em></p>\n"
            + "\n".join(sections) + "\n</body>\n</html>\n")


def _html(text: Any) -> str:
    """A markdown cell or note as HTML: escaped, **bold** as <strong>."""
    return ITALIC.sub(r"<em>\1</em>", BOLD.sub(r"<strong>\1</strong>", html.escape(str(text))))


def _section(table: Table, index: int) -> str:
    body = tabulate([[_html(c) for c in cells(r)] for r in table.rows], headers=COLUMNS, tablefmt="unsafehtml",
                    disable_numparse=True)
    footnotes = "".join(f"<p>{_html(FOOTNOTES[n])}</p>" for n in [*marked(table), "marks", "cost"])
    return (f'<section id="table-{index}">\n<h2>{html.escape(table.heading)}</h2>\n'
            f'<figure>{plot_svg(table)}</figure>\n<div class="scroll">{body}</div>\n{footnotes}\n</section>')


def _cross_section(table: CrossTable, index: int) -> str:
    body = tabulate([[_html(c) for c in cross_cells(table, r)] for r in table.rows], headers=cross_columns(table),
                    tablefmt="unsafehtml", disable_numparse=True)
    return (f'<section id="cross-{index}">\n<h2>{html.escape(table.heading)}</h2>\n<div class="scroll">{body}</div>\n'
            + "".join(f"<p>{_html(FOOTNOTES[n])}</p>" for n in cross_notes(table)) + "\n</section>")


def plot_svg(table: Table) -> str:
    """Mean recall against budget (log scale), one line per condenser with a ±1 std band;
    the full-data reference as a dashed horizontal line with its band."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as e:
        raise VLBenchError("the HTML leaderboard plots with matplotlib: pip install 'vlbench[report]'") from e

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "vlbench"}):  # text stays text
        fig = Figure(figsize=(7, 4))
        ax = fig.add_subplot()
        by_condenser: dict[str, list[dict[str, Any]]] = {}
        for row in table.rows:  # one line per condenser and config, as rows are keyed
            if not row["reference"]:
                label = row["condenser"] + (f" [{row['config_hash']}]" if row["config"] else "")
                by_condenser.setdefault(label, []).append(row)
        for name, rows in by_condenser.items():
            rows.sort(key=lambda r: r["budget"])
            x = [r["budget"] for r in rows]
            mean = [r["mean_mean"] for r in rows]
            std = [r["mean_std"] for r in rows]
            (line,) = ax.plot(x, mean, marker="o", label=name)
            ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=line.get_color(), alpha=0.2, linewidth=0)
        for full in [r for r in table.rows if r["reference"]][-1:]:  # the largest reference, as for recovery
            m, s = full["mean_mean"], full["mean_std"]
            ax.axhline(m, color="black", linestyle="--", label=f"{full['condenser']} ({full['budget']} pairs)")
            ax.axhspan(m - s, m + s, color="black", alpha=0.1, linewidth=0)
        ax.set_xscale("log")
        budgets = sorted({r["budget"] for rows in by_condenser.values() for r in rows})
        if budgets:  # ticks at the budgets run, labelled 100, not 10^2
            ax.set_xticks(budgets, [str(b) for b in budgets])
            ax.minorticks_off()
        ax.set_xlabel("budget (pairs)")
        ax.set_ylabel("mean recall (%)")
        ax.set_title(f"{table.dataset} · {table.backbone}", fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
    svg = out.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog and doctype: the SVG sits inside HTML
