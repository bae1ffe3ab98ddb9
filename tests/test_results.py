import json
import multiprocessing
import os
import re
import signal

import pytest

from vlbench.board.records import ResultsStore, new_run_id
from vlbench.core import stable_hash


def make_record(run_key="abcd1234abcd1234", created="2026-11-27T10:15:00Z", **extra):
    return {"schema": 1, "run_id": new_run_id(run_key), "run_key": run_key, "created": created, **extra}


def test_round_trip_sorted_by_created(tmp_path):
    store = ResultsStore(tmp_path)
    late = make_record(created="2026-11-27T12:00:00Z", metrics={"mean": {"tr@1": 1.5}})
    early = make_record(run_key="ffff0000ffff0000", created="2026-11-27T09:00:00Z")
    path = store.add(late)
    store.add(early)
    assert path == tmp_path / "records" / f"{late['run_id']}.json"
    assert store.records() == [early, late]
    assert store.find("abcd1234abcd1234") == [late]
    assert store.find("nope") == []


def test_new_run_id_is_unique_and_readable():
    ids = {new_run_id("abcd1234abcd1234") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"abcd1234-\d{8}T\d{6}Z-[0-9a-f]{8}", i) for i in ids)


def test_add_never_overwrites(tmp_path):
    store = ResultsStore(tmp_path)
    record = make_record()
    store.add(record)
    with pytest.raises(FileExistsError):
        store.add({**record, "created": "2027-01-01T00:00:00Z"})
    assert store.records() == [record]
    with pytest.raises(ValueError):
        store.add({**record, "run_id": "../escape"})


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_leaves_nothing(tmp_path, monkeypatch, capsys, failing):
    store = ResultsStore(tmp_path)
    first = make_record()
    store.add(first)

    def boom(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="disk on fire"):
        store.add(make_record(created="2026-11-28T00:00:00Z"))
    monkeypatch.undo()
    assert store.records() == [first]
    assert [p.name for p in (tmp_path / "records").iterdir()] == [f"{first['run_id']}.json"]
    assert capsys.readouterr().err == ""


def _add_then_die(directory, record):
    # SIGKILL just before the rename: no cleanup runs, the temp file stays on disk.
    os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    ResultsStore(directory).add(record)


def test_killed_writer_leaves_record_absent(tmp_path, capsys):
    store = ResultsStore(tmp_path)
    first = make_record()
    store.add(first)
    proc = multiprocessing.get_context("spawn").Process(target=_add_then_die, args=(tmp_path, make_record()))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    leftovers = [p.name for p in (tmp_path / "records").iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1  # the crash really happened mid-write
    assert store.records() == [first]
    assert capsys.readouterr().err == ""  # temp files are not reported as corrupt records


def _write_many(directory, worker, count):
    store = ResultsStore(directory)
    for i in range(count):
        store.add(make_record(run_key=f"{worker:08d}aaaaaaaa", index=i, payload="x" * 10_000))


def test_concurrent_writers(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(tmp_path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    records = ResultsStore(tmp_path).records()
    assert len(records) == 100
    assert len({r["run_id"] for r in records}) == 100
    assert sorted((r["run_key"], r["index"]) for r in records) == sorted(
        (f"{w:08d}aaaaaaaa", i) for w in range(4) for i in range(25)
    )
    assert all(len(r["payload"]) == 10_000 for r in records)


def test_unreadable_files_skipped_with_warning(tmp_path, caplog):
    store = ResultsStore(tmp_path)
    good = make_record()
    store.add(good)
    (tmp_path / "records" / "truncated.json").write_text(json.dumps(make_record())[:40])
    (tmp_path / "records" / "list.json").write_text("[1, 2]")
    (tmp_path / "records" / "binary.json").write_bytes(b"\xff\xfe\x00")
    assert store.records() == [good]
    err = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(err) == 3
    for name in ("truncated.json", "list.json", "binary.json"):
        assert sum(name in line for line in err) == 1


def test_empty_store(tmp_path):
    assert ResultsStore(tmp_path / "missing").records() == []


def test_a_record_reads_back_typed_and_as_stored(tmp_path):
    from vlbench.board.records import RunRecord, SharedCost

    shared = [{"stage": "expert_buffer", "wall_s": 61.5, "built_now": False, "built_by": "0123", "artifact": "x"}]
    record = make_record(condenser={"name": "tm-lora"}, budget=100,
                         spec={"budget": 100, "backbone": "tinyvit-minilm", "dataset": "synthscenes", "evals": 5},
                         metrics={"mean": {"mean": 42.25}, "std": {"mean": 2.5}},
                         stages={"prepare": {"wall_s": 1.5}, "condense": {"wall_s": 90.0, "cached": True}},
                         condensed={"path": "$VLBENCH_CACHE/condensed/x", "cost": {"own_s": 9.0, "shared": shared}})
    ResultsStore(tmp_path).add(RunRecord(record))  # a RunRecord is written as the JSON it holds
    (back,) = ResultsStore(tmp_path).records()
    assert isinstance(back, RunRecord) and back == record and json.loads(json.dumps(dict(back))) == record
    assert (back.run_id, back.run_key, back.condenser, back.budget) == (record["run_id"], record["run_key"], "tm-lora", 100)
    assert back.shape == ("tm-lora", stable_hash({}), 100, "tinyvit-minilm", "synthscenes", 5)  # its config: none recorded
    assert back.mean_recall == (42.25, 2.5) and back.condensed_reused
    assert back.stage_seconds == {"prepare": 1.5, "condense": 90.0}
    assert back.shared_costs == [SharedCost("expert_buffer", 61.5, False, "0123")]
    assert back.condensed_path == "$VLBENCH_CACHE/condensed/x"


def test_the_reference_is_the_condensers_flag_and_full_only_in_schema_1_records():
    from pathlib import Path

    from vlbench.board.records import RunRecord

    def record(name, **flag):
        return RunRecord({"run_id": "r", "condenser": {"name": name, **flag}})

    assert record("full", reference=True).reference and record("my-reference", reference=True).reference
    assert not record("full", reference=False).reference  # the flag, not the name
    assert record("full").reference and not record("random").reference  # schema 1: no flag yet
    archive = ResultsStore(Path(__file__).resolve().parents[1] / "results" / "v1").records()
    assert sum(r.reference for r in archive) == 1  # the v1 board's `full` row
