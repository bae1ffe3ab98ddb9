"""Regenerate the results table in README.md from the committed records (never typed by hand).

    python scripts/update_readme.py

Replaces the text between the `<!-- results:start -->` and `<!-- results:end -->` markers with
`vlbench leaderboard --format summary --min-seeds 3` of results/ (rows with 3 condensing seeds).
"""
from __future__ import annotations

import re
from pathlib import Path

from vlbench.board.render import render
from vlbench.board.tables import with_min_seeds
from vlbench.board.records import ResultsStore

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- results:start -->", "<!-- results:end -->"


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md lacks the {START} / {END} markers")
    summary = render(with_min_seeds(ResultsStore(ROOT / "results").records(), 3), "summary")
    text = re.sub(f"{re.escape(START)}.*?{re.escape(END)}", lambda _: f"{START}\n{summary}{END}", text, flags=re.S)
    readme.write_text(text)
    print("README.md: results table regenerated from results/records")


if __name__ == "__main__":
    main()
