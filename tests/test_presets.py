"""The GPU presets run as documented: every command in README.md, docs/ and the presets' own headers
that runs one gets past option parsing, and without the data stops at the data check."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vlbench.cli import main, specs_from_args, build_parser
from vlbench.config import expand, read_sweep

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "configs").glob("*.yaml"))]
# a command up to a comment, a code span's end, or the next command of a shell line
COMMAND = re.compile(r"vlbench (?:run|sweep|experts)\b[^`\n#&;|]*?configs/[\w.-]+\.yaml[^`\n#&;|]*")


def data_root(preset: str) -> str | None:
    """The data root a preset's runs read (none for the embedded data set, whose runs would really run)."""
    roots = {spec.data_root for spec in expand(read_sweep(ROOT / preset)["grid"])}
    assert len(roots) == 1, f"{preset} reads more than one data root"
    return roots.pop()


def preset_commands() -> list[str]:
    commands = {m.group(0).strip() for path in DOCUMENTED for m in COMMAND.finditer(path.read_text())}
    return sorted(c for c in commands if data_root(re.search(r"configs/[\w.-]+\.yaml", c).group(0)))


def test_the_docs_document_every_preset_command():
    commands = preset_commands()
    assert "vlbench run --config configs/flickr30k-tm.yaml --budget 100" in commands  # README's
    presets = {re.search(r"configs/[\w.-]+\.yaml", c).group(0) for c in commands}
    assert presets == {f"configs/{p.name}" for p in (ROOT / "configs").glob("*.yaml") if data_root(f"configs/{p.name}")}


@pytest.mark.parametrize("command", preset_commands())
def test_a_documented_preset_command_stops_at_the_data_check_without_data(command, tmp_path, monkeypatch, capsys,
                                                                           vlbench_cache):
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the command as written, from a directory without data/
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a command that fetches weights before the data check fails fast
    root = data_root(re.search(r"configs/[\w.-]+\.yaml", command).group(0))
    assert main(shlex.split(command)[1:]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("vlbench: error:") and f"data root {root} does not exist" in error
    assert not (tmp_path / "results").exists()


def run_specs(*argv: str):
    return specs_from_args(build_parser().parse_args(["run", *argv]))


def test_run_config_takes_a_sweep_file_and_the_flags_on_what_its_grid_varies_pick_the_run():
    preset = str(ROOT / "configs" / "flickr30k-tm-official.yaml")
    [spec], results = run_specs("--config", preset, "--budget", "500", "--evals", "1")
    official = expand(read_sweep(preset)["grid"])[2]
    assert spec.budget == 500 and spec.protocol == official.protocol  # the row's own protocol (408 steps)
    assert spec.condenser_options == official.condenser_options and results == "results"  # the sweep's
    assert spec.evals == 1  # a flag on what the grid fixes overrides it, as for a run file
    for argv, message in [([], "holds 4 runs: pick one with --budget 100 | 200 | 500 | 1000, or run them all with "
                               f"`vlbench sweep {preset}`"),
                          (["--budget", "300"], "has no run with budget 300 (its runs: --budget 100 | 200 | 500 | 1000)")]:
        with pytest.raises(Exception, match=re.escape(message)):
            run_specs("--config", preset, *argv)
