"""The tuning ruleset: declared search spaces, `vlbench tune` studies (resumable, through the sweep executors),
tuned configs that runs read with `tuned: true`, and the leaderboard's trial counts.

End-to-end tests tune `forgetting` (its declared space: epochs and lr) on a generated synthscenes slice
with a tiny protocol, under a small ruleset.
"""
import dataclasses
import json
import socket
import subprocess
from types import SimpleNamespace
from pathlib import Path

import pytest
import yaml

from vlbench.api import Condenser, VLBenchError, option
from vlbench.cli import main
from vlbench.board.tables import tables
from vlbench.board.records import ResultsStore
from vlbench.spaces import Choice, IntRange, LogUniform, check_space, search_space
from vlbench.config import expand
from vlbench.sweep.executors import InProcess, ProcessPool
from vlbench.tuning.tuned import Target, with_tuned

TINY = Target("forgetting", 10, backbone_options={"pretrained": None}, protocol={"steps": 2, "batch_size": 16})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A cache (in os.environ, for worker processes), a tiny data set, and a working directory whose configs/
    and results/ the study writes to."""
    import torch

    from vlbench.data.synthscenes import generate

    root = tmp_path_factory.mktemp("tune")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLBENCH_CACHE", str(root / "cache"))
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.chdir(root)
        torch.set_num_threads(1)
        generate(root / "data", 0, train=24, val=12, test=0, pretrain=0)
        yield root
    torch.set_num_threads(threads)


def small(trials: int = 3):
    from vlbench.tuning.studies import Ruleset

    return Ruleset(trials=trials, evals=1, startup_trials=1)


def tune(env, target=TINY, **kwargs):
    from vlbench.tuning import studies

    kwargs.setdefault("executor", InProcess())
    kwargs.setdefault("ruleset", small())
    return studies.tune(target, results=env / "results" / "tuning", data_root=str(env / "data"),
                       echo=lambda line: None, **kwargs)


# ----------------------------------------------------------------------------- spaces


def test_spaces_hold_their_values_and_refuse_a_default_outside():
    assert LogUniform(0.1, 10).contains(1.0) and not LogUniform(0.1, 10).contains(20.0)
    assert IntRange(2, 10).contains(6) and not IntRange(2, 10).contains(6.0) and not IntRange(2, 10).contains(True)
    assert Choice("a", "b").contains("a") and not Choice(0, 1).contains(False)
    with pytest.raises(VLBenchError, match="log scale"):
        LogUniform(0.0, 1.0)

    @dataclasses.dataclass
    class Config:
        lr: float = option(50.0, "an lr", search=LogUniform(0.1, 10))
        steps: int = option(3, "steps")

    assert list(search_space(Config)) == ["lr"]
    with pytest.raises(VLBenchError, match="default 50.0 is outside its search space"):
        check_space(Config, "condenser 'x'")


def test_a_plugin_whose_default_is_outside_its_space_is_refused():
    from vlbench.plugins import PluginError, check_plugin_class

    @dataclasses.dataclass
    class Config:
        lr: float = option(50.0, "an lr", search=LogUniform(0.1, 10))

    class Bad(Condenser):
        name = "bad"

        def condense(self, ctx):
            raise AssertionError

    Bad.Config = Config
    with pytest.raises(PluginError, match="outside its search space"):
        check_plugin_class("condenser", Bad)


def test_list_options_shows_the_search_space(capsys):
    assert main(["list", "--options", "tm-lora"]) == 0
    out = capsys.readouterr().out.splitlines()
    (lr_img,) = [line for line in out if line.split()[0] == "lr_img"]
    assert lr_img.endswith("[tuned: log-uniform [0.1, 100]]")
    (lr_lr,) = [line for line in out if line.split()[0] == "lr_lr"]
    assert "tuned" not in lr_lr
    assert main(["list", "--options", "random"]) == 0
    assert "nothing to tune" in capsys.readouterr().out


def test_first_party_methods_declare_what_the_literature_tunes():
    from vlbench.tuning.tuned import declared_space

    assert {"lr_img", "lr_txt", "iterations", "syn_steps", "max_start_epoch"} <= set(declared_space("tm-lora")[0])
    assert set(declared_space("tm")[0]) == set(declared_space("tm-lora")[0])
    assert {"lr_sim", "target_loss"} <= set(declared_space("lors")[0])
    assert set(declared_space("forgetting")[0]) == {"epochs", "lr"}
    assert declared_space("random")[0] == {} and declared_space("herding")[0] == {}


# ----------------------------------------------------------------------------- studies


def test_a_study_spends_its_trials_and_writes_the_best(env):
    from vlbench.tuning import studies

    study = tune(env)
    counted = studies.counted(study)
    assert len(counted) == 3
    first = study.trials[0]
    assert first.params == {"epochs": 6, "lr": 0.01} and first.user_attrs["defaults"]  # the method's own choice
    records = {r.run_id: r for r in ResultsStore(env / "results" / "tuning").records()}
    for t in counted:
        record = records[t.user_attrs["record"]]
        assert record["split"] == "val" and record["spec"]["seed"] == 100 and len(record["seeds"]) == 1
        assert record.mean_recall[0] == pytest.approx(t.value)
    assert records[first.user_attrs["record"]]["spec"]["condenser_options"] == {}  # the defaults are the default run
    best = max(counted, key=lambda t: t.value)
    choice = yaml.safe_load(TINY.tuned_file.read_text())
    assert choice["tuning"]["trials"] == 3 and choice["tuning"]["best_trial"] == best.number + 1
    assert choice["condenser_options"] == {k: v for k, v in best.params.items() if v != {"epochs": 6, "lr": 0.01}[k]}
    # a second call has nothing left to do, and the same seeded study draws the same trials
    again = tune(env)
    assert [t.params for t in again.trials] == [t.params for t in study.trials]


def test_the_sampler_is_seeded(env, tmp_path):
    """Two fresh studies of one target draw the same settings (the runs are reused from the first's records)."""
    target = dataclasses.replace(TINY, budget=12)
    a = tune(env, target, storage=f"sqlite:///{tmp_path / 'a.db'}")
    b = tune(env, target, storage=f"sqlite:///{tmp_path / 'b.db'}")
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert len({json.dumps(t.params, sort_keys=True) for t in a.trials}) == 3


def test_a_killed_study_runs_its_interrupted_trial_again(env, tmp_path):
    from vlbench.tuning import studies

    target = dataclasses.replace(TINY, budget=11)
    storage = f"sqlite:///{tmp_path / 'killed.db'}"
    ruleset = dataclasses.replace(small(), startup_trials=3)  # every trial a random draw of the seeded sampler
    study = studies.open_study(target, storage, ruleset)
    trial = study.ask()
    params = {"epochs": trial.suggest_int("epochs", 2, 10), "lr": trial.suggest_float("lr", 0.001, 0.1, log=True)}
    trial.set_user_attr("owner", f"{socket.gethostname()}:{dead_pid()}")  # its process died mid-trial
    study = tune(env, target, storage=storage, ruleset=ruleset)
    interrupted, retried = study.trials[0], study.trials[1]
    assert interrupted.user_attrs["interrupted"] and interrupted.state.name == "FAIL"
    assert retried.params == params and retried.user_attrs["retry_of"] == 0
    assert len(studies.counted(study)) == 3 and interrupted not in studies.counted(study)
    # the resumed process draws afresh: its sampler does not replay the draws of the one that died
    assert len({json.dumps(t.params, sort_keys=True) for t in studies.counted(study)}) == 3


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_trials_run_through_a_process_pool(env):
    from vlbench.tuning import studies

    target = dataclasses.replace(TINY, budget=9)
    study = tune(env, target, executor=ProcessPool(2), width=2, ruleset=small(2))
    assert len(studies.counted(study)) == 2
    records = {r.run_id for r in ResultsStore(env / "results" / "tuning").records()}
    # each trial ended with a record or with its run's own error (tiny data: some lrs diverge), not a dead job
    assert all(t.user_attrs.get("record") in records or "diverged" in t.user_attrs["error"] for t in study.trials)


def test_a_failed_trial_counts_and_says_why(env):
    """A setting whose run fails spends a trial (so a fragile space gets no extra tries) and keeps the reason."""
    from vlbench.tuning import studies

    target = dataclasses.replace(TINY, protocol={**TINY.protocol, "lr": 1e9})  # every evaluation model diverges
    study = tune(env, target, ruleset=small(2))
    assert len(studies.counted(study)) == 2
    assert all(t.state.name == "FAIL" and "lower the learning rate" in t.user_attrs["error"] for t in study.trials)
    assert not target.tuned_file.exists()


def test_a_bad_target_fails_before_any_trial(env, tmp_path):
    target = dataclasses.replace(TINY, budget=1000)  # more pairs than the slice's 120
    storage = f"sqlite:///{tmp_path / 'bad.db'}"
    with pytest.raises(VLBenchError, match="budget must be between 1 and the 120 training pairs"):
        tune(env, target, storage=storage)
    from vlbench.tuning import studies

    assert studies.open_study(target, storage).trials == []


def test_nothing_to_tune_is_one_line(env):
    with pytest.raises(VLBenchError, match="declares no search space"):
        tune(env, dataclasses.replace(TINY, condenser="random"))


# ----------------------------------------------------------------------------- tuned configs in runs


def test_a_tuned_run_uses_the_choice_and_says_so(env):
    tune(env)  # the study of the first test (or a fresh one): the file exists afterwards
    choice = yaml.safe_load(TINY.tuned_file.read_text())
    base = {"condenser": "forgetting", "budget": 10, "backbone_options": {"pretrained": None},
            "protocol": {"steps": 2, "batch_size": 16}, "data_root": str(env / "data"), "evals": 1}
    [spec] = expand([{**base, "tuned": True}])
    assert spec.condenser_options == choice["condenser_options"]
    assert spec.tuned["trials"] == 3 and spec.tuned["study"] == TINY.name
    [ablation] = expand([{**base, "tuned": True, "condenser_options": {"epochs": 2}}])
    assert ablation.condenser_options["epochs"] == 2  # given options win over the tuned ones
    # random declares nothing: `tuned: true` is its default run (the board's coreset rows keep their keys)
    [plain] = expand([{**base, "condenser": "random"}])
    [tuned_random] = expand([{**base, "condenser": "random", "tuned": True}])
    assert tuned_random == plain


def test_a_missing_tuned_config_names_the_command(env):
    with pytest.raises(VLBenchError, match=r"vlbench tune --condenser tm-lora --budget 300"):
        with_tuned({"condenser": "tm-lora", "budget": 300, "tuned": True})


def test_the_regenerate_command_gives_back_its_target():
    from vlbench.cli.options import backbone_assignments

    target = Target("tm-lora", 100, backbone_options={"pretrained": None, "pretrain_epochs": 5})
    flags = target.command.split("--backbone-opt ")[1:]
    assert backbone_assignments("tinyvit-minilm", [f.strip() for f in flags]) == target.backbone_options
    assert backbone_assignments("tinyvit-minilm", ["pretrained=auto"]) == {}  # a default spelled out: the default backbone
    assert "studies.tune" in TINY.command  # its protocol has no flag


def test_backbone_options_choose_the_study_and_its_tuned_file(env, capsys):
    """--backbone-opt on `vlbench tune` names the study of that backbone, and on `vlbench run --tuned` reads its
    tuned file (flags are applied before the tuned config is looked up)."""
    target = Target("forgetting", 10, backbone_options={"pretrained": None})
    assert main(["tune", "--condenser", "forgetting", "--budget", "10", "--backbone-opt", "pretrained=null",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"study {target.name}:" in out and str(target.tuned_file) in out and target.name != Target("forgetting", 10).name
    tune(env)
    config = env / "protocol.yaml"
    config.write_text(yaml.safe_dump({"protocol": {"steps": 2, "batch_size": 16}}))
    results = env / "results" / "flags"
    assert main(["run", "--condenser", "forgetting", "--budget", "10", "--tuned", "--backbone-opt", "pretrained=null",
                 "--data-root", str(env / "data"), "--evals", "1", "--split", "val", "--results", str(results),
                 "--device", "cpu", "--config", str(config)]) == 0
    [record] = ResultsStore(results).records()
    assert record["spec"]["tuned"]["study"] == TINY.name and record["spec"]["backbone_options"] == {"pretrained": None}
    sweep = env / "sweep.yaml"  # a tuned run picked from a sweep file has its backbone's config already
    sweep.write_text(yaml.safe_dump({"grid": [{"condenser": "forgetting", "budget": 10, "tuned": True,
                                               "backbone_options": {"pretrained": None}, "protocol": TINY.protocol}]}))
    assert main(["run", "--config", str(sweep), "--backbone-opt", "pretrained=emoji", "--results", str(results)]) == 2
    assert "set backbone_options in the sweep file's grid" in capsys.readouterr().err
    plain = dataclasses.replace(TINY, backbone_options={})
    plain.tuned_file.write_text(TINY.tuned_file.read_text())  # TINY's choice filed under another backbone's name
    with pytest.raises(VLBenchError, match="is for backbone_options"):
        with_tuned({"condenser": "forgetting", "budget": 10, "protocol": plain.protocol, "tuned": True})


def test_the_leaderboard_shows_trial_counts(env):
    from vlbench.board.tables import trials

    tune(env)
    results = env / "results" / "board"
    config = env / "tiny.yaml"
    config.write_text(yaml.safe_dump({"protocol": {"steps": 2, "batch_size": 16}, "backbone_options": {"pretrained": None}}))
    assert main(["run", "--condenser", "forgetting", "--budget", "10", "--tuned", "--data-root", str(env / "data"),
                 "--evals", "1", "--split", "val", "--results", str(results), "--device", "cpu",
                 "--config", str(config)]) == 0
    [table] = tables(ResultsStore(results).records(), split="val")
    [row] = table.rows
    assert row["trials"] == "3" and row["options"] == {}  # tuned options are not an ablation
    assert trials({"spec": {"tuned": {"trials": 16, "ruleset_trials": 8}}, "condenser": {}}) == "16*"
    assert trials({"spec": {}, "condenser": {"reference": False, "config": {"lr_img": 1.0}}}) == "hand"
    assert trials({"spec": {}, "condenser": {"reference": False, "config": {}}}) == "0"


def test_a_study_lands_from_another_checkout(env, script, tmp_path):
    """scripts/land_study.py: the database, its trials' records and the tuned file, nothing else."""
    from vlbench.tuning import studies

    study = tune(env)
    line = script("land_study").land(env, TINY.name, into=tmp_path)
    landed = studies.open_study(TINY, f"sqlite:///{tmp_path / studies.STUDY_DIR / (TINY.name + '.db')}")
    assert [t.params for t in landed.trials] == [t.params for t in study.trials]
    assert sorted(p.stem for p in (tmp_path / "results/tuning/records").glob("*.json")) == sorted(
        t.user_attrs["record"] for t in study.trials)
    assert (tmp_path / TINY.tuned_file).read_text() == TINY.tuned_file.read_text()
    assert line == f"{TINY.name}: 3 trials, 3 records, tuned file {TINY.tuned_file}"


def test_the_report_tables_and_plots_every_study(env, script, tmp_path):
    from vlbench.tuning import studies

    study = tune(env)  # the finished study of the test above, or run now
    report = script("tuning_report")
    values = [None, 3.0, None, 2.0, 5.0]  # None: a failed trial
    assert report.best_so_far([SimpleNamespace(value=v) for v in values]) == [None, 3.0, 3.0, 3.0, 5.0]
    assert report.main([str(env / "results" / "tuning" / "studies"), "--output", str(tmp_path / "studies")]) == 0
    counted = studies.counted(study)
    best = max(counted, key=lambda t: t.value)
    row = next(line for line in (tmp_path / "studies.md").read_text().splitlines() if line.startswith(f"| {study.study_name}"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:6] == [str(len(counted)), "0", f"{counted[0].value:.1f}", f"{best.value:.1f}", str(best.number + 1)]
    assert cells[6] == best.user_attrs["record"]
    assert (tmp_path / "studies.png").stat().st_size > 0


def test_the_findings_tables_are_generated_from_the_study_and_the_board(env, script, tmp_path):
    """scripts/ruleset_findings.py: the study's defaults -> best, the tuned row with its ids in seed order, its gain
    over random with the pooled std, written between the markers of the docs file and nowhere else."""
    import math
    import shutil

    from vlbench.data.synthscenes import generate
    from vlbench.tuning import studies

    study = studies.counted(tune(env))
    results = tmp_path / "results"
    shutil.copytree(env / "results" / "tuning", results / "tuning")
    generate(tmp_path / "data", 0, train=24, val=0, test=12, pretrain=0)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"protocol": {"steps": 2, "batch_size": 16}, "backbone_options": {"pretrained": None}}))
    for seed in ("1", "0"):  # seed 1 first: the ids must still come in seed order
        for condenser in (["forgetting", "--tuned"], ["random"]):
            assert main(["run", "--condenser", *condenser, "--budget", "10", "--data-root", str(tmp_path / "data"),
                         "--evals", "1", "--seed", seed, "--results", str(results), "--device", "cpu",
                         "--config", str(config)]) == 0
    docs = tmp_path / "protocol.md"
    docs.write_text("before\n<!-- ruleset-findings:start -->\nold\n<!-- ruleset-findings:end -->\nafter\n")
    findings = script("ruleset_findings")
    assert findings.main(["--docs", str(docs), "--results", str(results), "--archive", str(tmp_path / "none")]) == 0

    [table] = tables(ResultsStore(results).records())
    row = {r["condenser"]: r for r in table.rows}
    tuned, random = row["forgetting"], row["random"]
    seeds = {r.run_id: r["spec"]["seed"] for r in ResultsStore(results).records()}
    assert [seeds[i] for i in tuned["run_ids"]] == [0, 1]
    best = max(study, key=lambda t: (t.value, -t.number))
    text = docs.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    [block] = [b for b in text.split("**synthscenes · ")[1:] if b.startswith(f"{table.backbone} · 10 pairs**")]
    line = next(l for l in block.splitlines() if l.startswith("| forgetting |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1].startswith(f"{study[0].value:.1f} → {best.value:.1f} ({best.number + 1}: ")
    ids = ", ".join(i[:8] for i in tuned["run_ids"])
    assert cells[2] == f"{tuned['mean_mean']:.1f} ± {tuned['mean_std']:.1f} ({ids})"
    pooled = math.sqrt((tuned["mean_std"] ** 2 + random["mean_std"] ** 2) / 2)
    assert cells[3] == f"{tuned['mean_mean'] - random['mean_mean']:+.1f} ({pooled:.1f})"
    assert cells[4] == "—"  # no hand-chosen row
    assert "| random | nothing to tune |" in text

    docs.write_text("no markers\n")
    assert findings.main(["--docs", str(docs), "--results", str(results)]) == 2
