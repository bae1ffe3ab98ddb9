"""Leaderboard exports: CSV, JSON and the HTML page (tables + plots), pooled seeds, condensing cost.

The HTML page is checked by parsing it (stdlib HTMLParser) rather than by rendering it in a
browser, so that CI needs no Chromium: the plots are inline SVG whose labels are <text>.
"""
import csv
import io
import json
import re
from html.parser import HTMLParser

import pytest

from vlbench.cli import main
from vlbench.board.markdown import COLUMNS, leaderboard_markdown
from vlbench.board.render import render, write_leaderboard
from vlbench.board.tables import tables
from vlbench.board.records import ResultsStore, new_run_id

KEYS = ("tr@1", "tr@5", "tr@10", "ir@1", "ir@5", "ir@10", "mean")


def record(condenser="random", budget=100, models=(20.0,), seed=0, created="2026-11-27T10:00:00Z", key=None,
           cached=False, wall_s=12.0, mem_mb=512.0, device="cpu", learned_lrs=None):
    """A run record whose evaluation models score `models` on every metric."""
    per_seed = [{k: m for k in KEYS} for m in models]
    mean = sum(models) / len(models)
    std = (sum((m - mean) ** 2 for m in models) / len(models)) ** 0.5
    return {
        "run_id": new_run_id("abcd1234abcd1234"), "run_key": "abcd1234abcd1234", "created": created,
        "spec": {"condenser": condenser, "budget": budget, "seed": seed},
        "condenser": {"name": condenser, "version": "0.1.0", "config": {}},
        "backbone": {"name": "tinyvit-minilm", "id": "tinyvit-minilm"},
        "dataset": {"name": "synthscenes", "fingerprint": "0123456789abcdef"},
        "protocol": {"id": "v1-aaaaaa"},
        "budget": budget,
        "condensed": {"key": key, "num_pairs": budget, "storage_bytes": 1, "extra_bytes": 0, "learned_lrs": learned_lrs},
        "seeds": list(range(len(models))),
        "metrics": {"per_seed": per_seed, "mean": {k: mean for k in KEYS}, "std": {k: std for k in KEYS}},
        "stages": {"condense": {"wall_s": wall_s, "peak_mem_mb": mem_mb, "cached": cached}},
        "device": device,
    }


RECORDS = [
    record("full", 40000, models=(80.0, 80.0), wall_s=0.01),
    record("random", 10, models=(10.0, 12.0)),
    record("random", 100, models=(20.0, 22.0), seed=0),
    record("random", 100, models=(99.0, 99.0), seed=1, created="2026-11-26T00:00:00Z"),  # superseded below
    record("random", 100, models=(24.0, 26.0), seed=1, created="2026-11-28T00:00:00Z"),
    record("herding", 100, models=(30.0,), key="set-a", wall_s=100.0, mem_mb=2048.0, device="NVIDIA H100"),
    record("herding", 10, models=(15.0,), key="set-b", cached=True, wall_s=0.2, mem_mb=100.0),
]


def test_csv_rows_are_the_markdown_rows_unformatted():
    rows = list(csv.DictReader(io.StringIO(render(RECORDS, "csv"))))
    assert [(r["condenser"], r["budget"]) for r in rows] == [  # by budget, best first; the reference last
        ("herding", "10"), ("random", "10"), ("herding", "100"), ("random", "100"), ("full", "40000")]
    by = {(r["condenser"], int(r["budget"])): r for r in rows}
    assert by["random", 10]["mean_mean"] == "11.0" and by["random", 10]["mean_std"] == "1.0"
    assert float(by["random", 10]["recovery_pct"]) == pytest.approx(100 * 11.0 / 80.0)
    assert by["full", 40000]["recovery_pct"] == "100.0" and by["full", 40000]["condense_wall_s"] == ""
    herding = by["herding", 100]
    assert (herding["condense_wall_s"], herding["condense_peak_mem_mb"], herding["condense_device"]) == (
        "100.0", "2048.0", "NVIDIA H100")
    assert {r["dataset"] for r in rows} == {"synthscenes"} and {r["protocol"] for r in rows} == {"v1-aaaaaa"}


def test_seeds_pool_newest_record_per_seed():
    [table] = json.loads(render(RECORDS, "json"))["tables"]
    [row] = [r for r in table["rows"] if (r["condenser"], r["budget"]) == ("random", 100)]
    # Seed 0 scored 20 and 22, the newest seed-1 record 24 and 26; the older seed-1 record is ignored.
    assert row["seeds"] == [0, 1] and row["evals"] == [2] and len(row["run_ids"]) == 2
    assert row["mean_mean"] == 23.0 and abs(row["mean_std"] - 8 ** 0.5) < 1e-9  # std of the seed means 21, 25
    md_row = next(line for line in leaderboard_markdown(RECORDS).splitlines() if re.match(r"\| random 0.1.0 +\| +100 \|", line))
    assert re.search(r"\| +2 \| .* 23.0 ± 2.8 .*\| +2 \|", md_row)


def test_the_cost_of_a_reused_set_travels_with_it():
    cost = {"own_s": 70.0, "shared": [{"stage": "reference_model", "wall_s": 30.0, "built_now": False}]}
    reuse = record("herding", 100, models=(31.0,), key="set-a", cached=True, wall_s=0.1, mem_mb=90.0,
                   created="2026-11-29T00:00:00Z", seed=0)
    reuse["condensed"]["cost"] = cost  # the runner copies it from the cached set's manifest
    rows = {(r["condenser"], r["budget"]): r for r in json.loads(render([*RECORDS, reuse], "json"))["tables"][0]["rows"]}
    assert rows["herding", 100]["mean_mean"] == 31.0  # the newest record of seed 0 ...
    assert rows["herding", 100]["condense_wall_s"] == 100.0  # ... priced at its set's own and shared stages
    assert rows["herding", 10]["condense_wall_s"] is None  # an old cached record: unknown, never "0 s"


class Page(HTMLParser):
    """The parts of the page a reader sees: section headings, table cells, SVG text, x tick labels."""

    def __init__(self, text):
        super().__init__()
        self.sections, self._stack = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self._stack.append((tag, dict(attrs).get("id", "")))
        if tag == "section":
            self.sections.append({"h2": "", "rows": [], "svg_text": [], "xticks": [], "svg": 0, "bands": 0})
        elif tag == "svg":
            self.sections[-1]["svg"] += 1
        elif tag == "tr":
            self.sections[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self.sections[-1]["rows"][-1].append("")
        elif tag == "g" and dict(attrs).get("id", "").startswith("FillBetweenPolyCollection"):
            self.sections[-1]["bands"] += 1

    def handle_endtag(self, tag):
        while self._stack and self._stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        if not self.sections or not data.strip():
            return
        section, tags = self.sections[-1], [t for t, _ in self._stack]
        if tags[-1] == "h2":
            section["h2"] += data
        elif "td" in tags or "th" in tags:  # a cell's text, <strong> included
            section["rows"][-1][-1] = (section["rows"][-1][-1] + data).strip()
        elif tags[-1] == "text" and "svg" in tags:
            section["svg_text"].append(data.strip())
            if any(i.startswith("xtick_") for _, i in self._stack):
                section["xticks"].append(data.strip())


def markdown_rows(text):
    """The first markdown table's body rows, cells without markdown's ** marks."""
    lines = [line for line in text.splitlines() if line.startswith("|")][2:]
    return [[c.strip().replace("**", "") for c in line.strip("|").split("|")] for line in lines]


def test_html_page_has_a_plot_and_the_table_per_board(tmp_path):
    other_protocol = record("random", 10, models=(5.0,))
    other_protocol["protocol"]["id"] = "v1-bbbbbb"
    store = ResultsStore(tmp_path)
    for r in [*RECORDS, other_protocol]:
        store.add(r)
    text = write_leaderboard(tmp_path, fmt="html")
    assert (tmp_path / "LEADERBOARD.html").read_text() == text
    assert text.startswith("<!doctype html>") and "<script" not in text and "http" not in text.split("<svg")[0]

    main_board, other = Page(text).sections
    assert main_board["h2"] == "synthscenes (data 01234567) · backbone tinyvit-minilm · protocol v1-aaaaaa"
    assert "protocol v1-bbbbbb" in other["h2"]
    header, *rows = main_board["rows"]
    assert header == COLUMNS
    assert rows == markdown_rows(leaderboard_markdown(RECORDS))  # the markdown table, cell for cell, same order
    # One plot: a line and a std band per condenser, the full-data reference as a labelled line,
    # x ticks at the budgets (not 10^1, 10^2).
    assert main_board["svg"] == 1 and main_board["bands"] == 2
    assert {"herding", "random", "full (40000 pairs)", "budget (pairs)", "mean recall (%)"} <= set(main_board["svg_text"])
    assert main_board["xticks"] == ["10", "100"]
    assert other["bands"] == 1 and "herding" not in other["svg_text"] and other["xticks"] == ["10"]


def test_html_marks_the_best_mean_at_each_budget_in_bold():
    page = render(RECORDS, "html")
    [table] = tables(RECORDS)
    marked = [r for r in table.rows if r["rank_mark"]]
    assert {r["budget"] for r in marked} == {10, 100}  # a best (or tied) row at each budget
    section = page.split("<tbody>")[1].split("</tbody>")[0]
    strong_rows = [tr for tr in section.split("<tr>") if "<strong>" in tr]
    assert len(strong_rows) == len(marked)
    assert all(f"{r['mean_mean']:.1f} ± {r['mean_std']:.1f}</strong>" in page for r in marked)
    assert "<strong>bold</strong>: best at its budget" in page  # the note says what bold means


def test_cli_formats_and_empty_store(tmp_path, capsys):
    assert main(["leaderboard", "--results", str(tmp_path), "--format", "json", "--output", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["tables"] == []
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'b.json'}"
    assert main(["leaderboard", "--results", str(tmp_path), "--format", "html"]) == 0
    assert "No records yet." in (tmp_path / "LEADERBOARD.html").read_text()
    assert main(["leaderboard", "--results", str(tmp_path), "--format", "csv"]) == 0
    assert (tmp_path / "LEADERBOARD.csv").read_text() == ""
    assert re.search(r"No records yet", render([], "md"))


def test_cross_architecture_table_in_json_and_html():
    from test_leaderboard import CONV, CROSS, VIT
    from test_leaderboard import tables as markdown_tables

    [cross] = json.loads(render(CROSS, "json"))["cross_architecture"]
    assert cross["backbones"] == [CONV, VIT] and cross["protocol"] == "v1-aaaaaa"
    tm_on_conv = next(r for r in cross["rows"] if r["condenser"] == "tm" and r["condensed_on"] == CONV)
    assert tm_on_conv["cells"][VIT]["mean"] == 14.0 and tm_on_conv["cells"][VIT]["seeds"] == [0, 1, 2]
    assert tm_on_conv["cells"][VIT]["std"] == pytest.approx(2.0) and tm_on_conv["cells"][VIT]["std_over"] == "seeds"

    page = render(CROSS, "html")
    section = Page(page).sections[-1]
    assert section["h2"] == "synthscenes (data 01234567) · cross-architecture · protocol v1-aaaaaa"
    header, *rows = section["rows"]
    assert header == ["Condenser", "Pairs", "Trials", "Condensed on", f"on {CONV}", f"on {VIT}"]
    [md_rows] = [v for k, v in markdown_tables(leaderboard_markdown(CROSS)).items() if "cross" in k]
    assert rows == [[c.replace("*", "") for c in r.values()] for r in md_rows]  # the markdown table, cell for cell
    assert "<em>31.0 ± 1.0</em>" in page and "<em>italic</em>" in page  # the same-architecture cells, and the note
