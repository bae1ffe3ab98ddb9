"""The board: the records store (records.py), the leaderboard's tables built from it (tables.py), their
renderers (markdown.py, html.py; every format and the file in render.py), two result directories compared
(compare.py) and a record rerun and compared with itself (reproduce.py)."""
