"""scripts/land_rows.py: complete regenerated rows land in results/records, and the records of the board place
they take over move to the archive with git mv; incomplete rows and other places stay as they are."""
import json
import subprocess


def record(run_id, condenser="tm", budget=100, seed=0, options=None, tuned=None, config=None):
    """A record as the board reads it: `options` given to the run, `config` the condenser's effective one."""
    return {"run_id": run_id, "condenser": {"name": condenser, "config": config or options or {}}, "budget": budget,
            "split": "test", "dataset": {"name": "synthscenes", "fingerprint": "f" * 16},
            "backbone": {"id": "tinyvit-minilm"}, "protocol": {"id": "v2-aaaaaa"},
            "spec": {"seed": seed, "condenser_options": options or {}, **({"tuned": tuned} if tuned else {})}}


def write(directory, r):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{r['run_id']}.json").write_text(json.dumps(r))


def test_complete_rows_land_and_archive_what_they_replace(tmp_path, script, monkeypatch):
    repo, source = tmp_path / "repo", tmp_path / "worktree" / "results"
    hand = [record(f"hand{s}", config={"lr_img": 1.0}, seed=s) for s in range(3)]  # protocol v2's defaults, chosen by hand
    ablation = [record(f"abl{s}", options={"lr_img": 1.0, "iterations": 0}, seed=s, tuned={"options": {"lr_img": 1.0}})
                for s in range(3)]  # an ablation: another place on the board
    for r in hand + ablation + [record("kept", condenser="random", budget=100)]:
        write(repo / "results" / "records", r)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "old"], check=True)
    tuned = {"options": {"lr_img": 0.3}, "trials": 8}
    for s in range(3):
        write(source / "records", record(f"tuned{s}", options={"lr_img": 0.3}, seed=s, tuned=tuned))
    write(source / "records", record("tuned0b", options={"lr_img": 0.3}, seed=0, tuned=tuned))  # a retry of seed 0
    for s in (0, 1):  # two seeds of a row: not landed
        write(source / "records", record(f"half{s}", budget=200, seed=s))
    for s in range(3):  # one place, two settings: not landed
        write(source / "records", record(f"mixed{s}", budget=500, seed=s, config={"lr_img": 1.0 + (s == 2)}))
    monkeypatch.chdir(repo)
    lines = script("land_rows").land(source, repo / "results", repo / "results" / "v2" / "records")
    assert lines[:2] == ["landed: tm@100, new tuned0 tuned0b tuned1 tuned2; archived hand0 hand1 hand2",
                         "incomplete, not landed: tm@200 (seeds [0, 1])"]
    assert lines[2].startswith("several configs, not landed: tm@500") and len(lines) == 3
    assert sorted(p.stem for p in (repo / "results" / "records").glob("*.json")) == [
        "abl0", "abl1", "abl2", "kept", "tuned0", "tuned0b", "tuned1", "tuned2"]
    status = subprocess.run(["git", "status", "--short"], capture_output=True, text=True, check=True).stdout
    assert "R  results/records/hand0.json -> results/v2/records/hand0.json" in status  # moved in git, history kept
    again = script("land_rows").land(source, repo / "results", repo / "results" / "v2" / "records")
    assert [line.split(":")[0] for line in again] == ["incomplete, not landed", "several configs, not landed"]  # nothing twice
