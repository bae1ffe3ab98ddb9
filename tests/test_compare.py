"""`vlbench leaderboard --compare`: a local run's rows next to the committed ones."""

from vlbench.cli import main
from vlbench.board.compare import comparison
from vlbench.board.records import ResultsStore
from test_leaderboard_exports import record


def with_threads(r, threads):
    r["torch_threads"] = threads
    return r


def other_protocol(r):
    r["protocol"]["id"] = "v1-bbbbbb"
    return r


OURS = [
    with_threads(record("random", 100, models=(20.0, 22.0)), 2),
    record("herding", 100, models=(30.0, 30.2)),
    other_protocol(record("kcenter", 100, models=(25.0,))),
    record("kcenter", 10, models=(12.0,)),
]
THEIRS = [
    with_threads(record("random", 100, models=(21.0, 23.0)), 1),
    record("herding", 100, models=(20.0, 20.2)),
    record("kcenter", 100, models=(24.0,)),
]


def test_each_row_is_matched_with_the_comparable_one():
    lines = {line.split("|")[1].strip() + "@" + line.split("|")[2].strip(): [c.strip() for c in line.strip("|").split("|")]
             for line in comparison(OURS, THEIRS, ("runs", "results")).splitlines()[2:]}
    assert lines["random@100"][2:] == ["21.0 ± 1.0", "22.0 ± 1.0", "-1.0", "within noise; torch threads 2 vs 1"]
    assert lines["herding@100"][2:] == ["30.1 ± 0.1", "20.1 ± 0.1", "+10.0", "above"]
    assert lines["kcenter@100"][3:] == ["—", "—", "not comparable: protocol v1-bbbbbb vs v1-aaaaaa"]
    assert lines["kcenter@10"][5] == "no row with this condenser and budget"


def test_cli_writes_the_board_and_prints_the_comparison(tmp_path, capsys):
    for directory, records in (("runs", OURS), ("results", THEIRS)):
        store = ResultsStore(tmp_path / directory)
        for r in records:
            store.add(r)
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert main(["leaderboard", "--results", str(runs), "--compare", str(results)]) == 0
    out = capsys.readouterr().out
    assert [c.strip() for c in out.splitlines()[0].split("|")[3:5]] == [f"Mean ({runs})", f"Mean ({results})"]
    assert (runs / "LEADERBOARD.md").exists() and not (results / "LEADERBOARD.md").exists()
    assert main(["leaderboard", "--results", str(runs), "--compare", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == f"vlbench: error: {tmp_path / 'nowhere'} holds no records/ to compare with"
