import argparse
import json
import os
import subprocess
import sys

import pytest

from vlbench import plugins
from vlbench.api import VLBenchError
from vlbench.cli.plugins import add_plugin_commands, add_strict_flag, apply_strict_flag
from vlbench.plugins import PluginError, Registry
from plugin_dist import install_dist

CONDENSER = """
from vlbench import hookimpl
from vlbench.api import CondensedSet, Condenser

class FirstPairs(Condenser):
    name = "{name}"
    def condense(self, ctx):
        return CondensedSet.from_indices(ctx.train, range(ctx.budget))

@hookimpl
def register_condensers(register):
    register(FirstPairs)
"""

# Registers a backbone fine, then its condenser hook raises: the plugin must count not at all.
HALF_BROKEN = """
from vlbench import hookimpl
from vlbench_plugins.tinyvit_minilm import TinyViTMiniLM

class Other(TinyViTMiniLM):
    name = "other-backbone"

@hookimpl
def register_backbones(register):
    register(Other)

@hookimpl
def register_condensers(register):
    raise RuntimeError("no licence key\\nsecond line")
"""


def reported(caplog) -> list[str]:
    """What loading the plugins reported (warnings, through logging), one message each."""
    return [r.getMessage() for r in caplog.records]


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    for var in ("VLBENCH_PLUGINS", "VLBENCH_DISABLE_PLUGINS", "VLBENCH_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(plugins, "_registry", None)  # the process-wide registry must see this site
    return tmp_path


def first_pairs(site, dist="vlbench-firstpairs", name="first", version="1.0"):
    module = f"vlb_{name.replace('-', '_')}"
    install_dist(site, dist, {module: CONDENSER.format(name=name)}, {name: module}, version)


def install_broken(site):
    install_dist(site, "vlbench-broken", {"vlb_broken": "import no_such_module_anywhere\n"}, {"broken": "vlb_broken"})


def test_builtins_come_through_entry_points():
    reg = Registry()
    assert {"random", "full", "tm", "tm-lora"} <= set(reg.names("condenser"))
    assert "tinyvit-minilm" in reg.names("backbone")
    assert "synthscenes" in reg.names("dataset")
    assert reg.provenance("condenser", "random")["distribution"] == "vlbench"
    assert reg.get("condenser", "tm-lora").__name__ == "LoRATrajectoryMatching"


# A light module naming its condenser by import path, as plugins/builtin.py does.
LAZY = """
from vlbench import hookimpl

@hookimpl
def register_condensers(register):
    register("vlb_lazy_heavy:FirstPairs", name="lazy")
"""


# What `vlbench list` and `vlbench plugins` do, then which heavy modules were imported.
LISTING = """
import sys
from vlbench.plugins import registry
from vlbench.cli.plugins import cmd_plugins
reg = registry()
for kind in ("condenser", "backbone", "dataset"):
    for name in reg.names(kind):
        reg.provenance(kind, name)
cmd_plugins(type("Args", (), {"json": False, "check": False})())
heavy = ("torch", "peft", "timm", "transformers", "vlbench_plugins.tm", *sys.argv[1:])
print("IMPORTED", sorted(m for m in heavy if m in sys.modules))
"""


def test_listing_plugins_imports_none_of_them(site):
    install_dist(site, "vlbench-lazy", {"vlb_lazy": LAZY, "vlb_lazy_heavy": CONDENSER.format(name="lazy")},
                 {"lazy": "vlb_lazy"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", LISTING, "vlb_lazy_heavy"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "vlbench-lazy" in done.stdout and "condenser lazy" in done.stdout
    assert done.stdout.splitlines()[-1] == "IMPORTED []"


def test_a_name_registered_by_import_path_is_imported_on_first_use(site):
    install_dist(site, "vlbench-lazy", {"vlb_lazy": LAZY, "vlb_lazy_heavy": CONDENSER.format(name="lazy")},
                 {"lazy": "vlb_lazy"})
    reg = Registry()
    assert "lazy" in reg.names("condenser")
    assert reg.provenance("condenser", "lazy") == {"name": "lazy", "distribution": "vlbench-lazy", "version": "1.0"}
    assert "vlb_lazy_heavy" not in sys.modules
    cls = reg.get("condenser", "lazy")
    assert cls.__module__ == "vlb_lazy_heavy" and reg.get("condenser", "lazy") is cls


@pytest.mark.parametrize("heavy, error", [
    ("import no_such_module_anywhere\n", r"condenser 'lazy' \(vlbench-lazy 1.0, vlb_lazy_heavy:FirstPairs\) "
                                          r"cannot be loaded: ModuleNotFoundError: No module named 'no_such_module_anywhere'$"),
    ("X = 1\n", "cannot be loaded: AttributeError"),
    (CONDENSER.format(name="other"), r"vlb_lazy_heavy:FirstPairs\) is a class named 'other'$"),
    ("FirstPairs = int\n", r"FirstPairs\) is invalid: register\(\) for condensers got <class 'int'>, not a Condenser"),
])
def test_a_broken_import_path_fails_only_its_name(site, heavy, error, capsys):
    install_dist(site, "vlbench-lazy", {"vlb_lazy": LAZY, "vlb_lazy_heavy": heavy}, {"lazy": "vlb_lazy"})
    reg = Registry()
    with pytest.raises(PluginError, match=error):
        reg.get("condenser", "lazy")
    assert reg.get("condenser", "random").__name__ == "RandomPairs"
    assert run_plugin_cli(["plugins", "--check"]) == 1
    assert "check failed: condenser 'lazy' (vlbench-lazy 1.0" in capsys.readouterr().out


def test_an_import_path_without_a_name_is_refused(site, caplog):
    source = LAZY.replace(', name="lazy"', "")
    install_dist(site, "vlbench-noname", {"vlb_noname": source}, {"noname": "vlb_noname"})
    Registry()
    assert ("register_condensers raised PluginError: register() for condensers got 'vlb_lazy_heavy:FirstPairs': "
            "give a class, or an import path 'module:Class' and the name it registers (name=...)") in caplog.text


def test_third_party_entry_point_is_discovered(site):
    first_pairs(site, version="2.3")
    reg = Registry()
    assert reg.get("condenser", "first").__name__ == "FirstPairs"
    assert reg.provenance("condenser", "first") == {"name": "first", "distribution": "vlbench-firstpairs", "version": "2.3"}


def test_unknown_name_lists_known_and_suggests_closest():
    with pytest.raises(VLBenchError) as e:
        Registry().get("condenser", "randon")
    message = str(e.value)
    assert "known:" in message and "full" in message and "did you mean 'random'?" in message


def test_broken_import_is_skipped_and_reported_in_one_line(site, caplog):
    install_broken(site)
    reg = Registry()
    assert "random" in reg.names("condenser")
    err = reported(caplog)
    assert len(err) == 1
    assert "vlbench-broken" in err[0] and "ModuleNotFoundError" in err[0] and "no_such_module_anywhere" in err[0]
    assert [p.status for p in reg.plugins if p.distribution == "vlbench-broken"] == ["error"]


def test_raising_hook_skips_the_whole_plugin(site, caplog):
    install_dist(site, "vlbench-halfbroken", {"vlb_half": HALF_BROKEN}, {"half": "vlb_half"})
    reg = Registry()
    err = reported(caplog)
    assert err == ["plugin vlbench-halfbroken (half) skipped: "
                   "register_condensers raised RuntimeError: no licence key second line"]
    assert "other-backbone" not in reg.names("backbone")
    assert "tinyvit-minilm" in reg.names("backbone")


@pytest.mark.parametrize("body, error", [
    ("register(object)", "not a Condenser subclass"),
    ("register(type('Abstract', (Condenser,), {'name': 'abstract'}))", "does not implement condense"),
    ("register(type('Nameless', (Condenser,), {'condense': lambda self, ctx: None}))", "has no `name`"),
])
def test_invalid_registrations_are_reported(site, caplog, body, error):
    source = f"from vlbench import hookimpl\nfrom vlbench.api import Condenser\n\n@hookimpl\ndef register_condensers(register):\n    {body}\n"
    install_dist(site, "vlbench-invalid", {"vlb_invalid": source}, {"invalid": "vlb_invalid"})
    Registry()
    assert error in "\n".join(reported(caplog))


def test_misspelled_hook_is_reported(site, caplog):
    source = "from vlbench import hookimpl\n\n@hookimpl\ndef register_condenser(register):\n    pass\n"
    install_dist(site, "vlbench-typo", {"vlb_typo": source}, {"typo": "vlb_typo"})
    Registry()
    assert "unknown hook(s) register_condenser (hooks: register_condensers" in "\n".join(reported(caplog))


def test_strict_mode_turns_a_failure_into_an_error(site, monkeypatch):
    install_broken(site)
    with pytest.raises(PluginError, match=r"^plugin vlbench-broken \(broken\) failed: cannot load"):
        Registry(strict=True)
    monkeypatch.setenv("VLBENCH_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="vlbench-broken"):
        Registry()


def test_process_wide_registry_reports_a_failure_once(site, caplog):
    install_broken(site)
    assert plugins.registry() is plugins.registry()
    assert "\n".join(reported(caplog)).count("vlbench-broken") == 1


def test_name_collision_makes_only_that_name_unavailable(site, caplog):
    install_dist(site, "vlbench-copycat", {"vlb_copycat": CONDENSER.format(name="random").replace(
        "register(FirstPairs)", "register(FirstPairs); register(Own)").replace(
        "@hookimpl", "class Own(FirstPairs):\n    name = 'own'\n\n@hookimpl")}, {"copycat": "vlb_copycat"})
    reg = Registry()
    assert reported(caplog) == [
        "condenser name 'random' is registered by vlbench and vlbench-copycat, so neither is used; keep "
        "vlbench's with VLBENCH_DISABLE_PLUGINS=vlbench-copycat:random, or vlbench-copycat's with "
        "VLBENCH_DISABLE_PLUGINS=vlbench:random"]
    assert "random" not in reg.names("condenser")
    assert {"own", "herding", "full"} <= set(reg.names("condenser"))  # everything else keeps working
    assert reg.get("condenser", "own").__name__ == "Own"
    with pytest.raises(PluginError, match=r"registered by vlbench and vlbench-copycat.*VLBENCH_DISABLE_PLUGINS="):
        reg.get("condenser", "random")
    assert [p.clashes for p in reg.plugins if p.distribution == "vlbench-copycat"] == [["condenser random"]]
    with pytest.raises(PluginError, match="'random' is registered by vlbench and vlbench-copycat"):
        Registry(strict=True)


def test_collision_within_one_distribution(site, caplog):
    source = CONDENSER.format(name="twice").replace("register(FirstPairs)", "register(FirstPairs); register(FirstPairs)")
    install_dist(site, "vlbench-twice", {"vlb_twice": source}, {"twice": "vlb_twice"})
    reg = Registry()
    assert "'twice' is registered twice by vlbench-twice, so it is unavailable" in "\n".join(reported(caplog))
    assert "twice" not in reg.names("condenser") and "random" in reg.names("condenser")


@pytest.mark.parametrize("block, random_from", [
    ("vlbench-copycat", "vlbench"),          # the whole distribution
    ("random", "vlbench"),                   # a bare name: third-party registrations only
    ("vlbench-copycat:random", "vlbench"),   # one name of one distribution
    ("vlbench:random", "vlbench-copycat"),   # the built-in, asked for by its distribution
])
def test_block_list_resolves_a_collision(site, monkeypatch, caplog, block, random_from):
    first_pairs(site, dist="vlbench-copycat", name="random")
    monkeypatch.setenv("VLBENCH_DISABLE_PLUGINS", block)
    reg = Registry()
    assert reg.origin("condenser", "random").distribution == random_from
    assert reported(caplog) == []


def test_block_list_never_blocks_a_builtin_by_its_bare_name(site, monkeypatch, caplog):
    monkeypatch.setenv("VLBENCH_DISABLE_PLUGINS", "herding")
    assert "herding" in Registry().names("condenser")
    assert "\n".join(reported(caplog)) == ("VLBENCH_DISABLE_PLUGINS names no installed plugin: herding "
                                               "(vlbench's own names are blocked as vlbench:NAME)")
    monkeypatch.setenv("VLBENCH_DISABLE_PLUGINS", "vlbench:herding")
    assert "herding" not in Registry().names("condenser") and "kcenter" in Registry().names("condenser")


def test_block_list_skips_a_distribution_and_says_so_on_lookup(site, monkeypatch):
    first_pairs(site)
    monkeypatch.setenv("VLBENCH_DISABLE_PLUGINS", "vlbench-firstpairs")
    reg = Registry()
    assert "first" not in reg.names("condenser") and "random" in reg.names("condenser")
    with pytest.raises(VLBenchError, match=r"not loaded: vlbench-firstpairs \(first, disabled\)"):
        reg.get("condenser", "first")


def test_blocked_plugin_is_not_even_imported(site, monkeypatch, caplog):
    install_broken(site)
    monkeypatch.setenv("VLBENCH_DISABLE_PLUGINS", "broken")  # an entry-point name works too
    assert [p.status for p in Registry().plugins if p.distribution == "vlbench-broken"] == ["disabled"]
    assert reported(caplog) == []


def test_allow_list_loads_only_the_named_plugins(site, monkeypatch):
    first_pairs(site)
    first_pairs(site, dist="vlbench-other", name="other")
    # Distribution names are matched in PEP 503 form, entry-point names as well.
    monkeypatch.setenv("VLBENCH_PLUGINS", "VLBench_FirstPairs, synthscenes")  # a registered name of vlbench's
    reg = Registry()
    assert reg.names("condenser") == ["first"]
    assert reg.names("dataset") == ["synthscenes"]
    assert reg.names("backbone") == []


def test_allow_or_block_list_naming_no_plugin_is_reported(site, monkeypatch, caplog):
    monkeypatch.setenv("VLBENCH_DISABLE_PLUGINS", "vlbench-nosuch")
    Registry()
    assert "\n".join(reported(caplog)) == "VLBENCH_DISABLE_PLUGINS names no installed plugin: vlbench-nosuch"


# ----------------------------------------------------------------------------- command line


def run_plugin_cli(argv):
    parser = argparse.ArgumentParser()
    add_strict_flag(parser)
    add_plugin_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    apply_strict_flag(args)
    return args.func(args)


def test_plugins_command_lists_every_plugin_with_errors(site, capsys):
    first_pairs(site, version="2.3")
    install_broken(site)
    assert run_plugin_cli(["plugins"]) == 0
    out = capsys.readouterr().out
    first = next(line for line in out.splitlines() if line.startswith("vlbench-firstpairs"))
    assert first.split() == ["vlbench-firstpairs", "2.3", "first", "condenser", "first", "loaded"]
    assert "error in vlbench-broken (broken): cannot load vlb_broken: ModuleNotFoundError" in out


def test_plugins_command_json(site, capsys):
    first_pairs(site)
    run_plugin_cli(["plugins", "--json"])
    listed = {p["distribution"]: p for p in json.loads(capsys.readouterr().out)}
    assert listed["vlbench-firstpairs"]["registered"]["condenser"] == ["first"]
    assert listed["vlbench"]["version"] and listed["vlbench"]["status"] == "loaded"


@pytest.mark.parametrize("argv", [["--strict-plugins", "plugins"], ["plugins", "--strict-plugins"]])
def test_strict_flag_before_or_after_the_command_makes_a_broken_plugin_an_error(site, argv):
    install_broken(site)
    with pytest.raises(PluginError, match="vlbench-broken"):
        run_plugin_cli(argv)
    plugins._registry = None
    assert run_plugin_cli(["plugins"]) == 0  # without the flag: skipped and reported


def test_broken_plugin_does_not_take_down_the_cli(site):
    install_broken(site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    for argv in (["--help"], ["list"]):
        done = subprocess.run([sys.executable, "-m", "vlbench.cli", *argv], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "usage" in done.stdout if argv == ["--help"] else "random" in done.stdout
    assert done.stderr.count("vlbench-broken") == 1


@pytest.mark.parametrize("argv", [["list", "--options", "tm-lora"], ["plugins"]])
def test_a_reader_that_stops_early_gets_no_traceback(argv):
    """`vlbench list --options tm-lora | head`: the pipe closes before vlbench writes; it stops quietly."""
    proc = subprocess.Popen([sys.executable, "-m", "vlbench.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the interpreter has even started: every write meets a closed pipe
    stderr = proc.stderr.read()
    assert proc.wait() == 141  # 128 + SIGPIPE, as for any command whose reader went away
    assert stderr == "", stderr


# The CLI's own entry, then which heavy modules the command imported.
CLI = """
import sys
from vlbench.cli import main
try:
    main(sys.argv[1:])
except SystemExit:  # --help
    pass
print("IMPORTED", sorted(m for m in ("torch", "peft", "timm", "transformers") if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["plugins"], ["leaderboard", "--results", "{tmp}"]])
def test_cli_answers_without_importing_torch(argv, tmp_path):
    argv = [a.format(tmp=tmp_path) for a in argv]
    done = subprocess.run([sys.executable, "-c", CLI, *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "IMPORTED []"


# A third party's command and stage, both through hooks; its command clashes with nothing.
COMMANDS = """
from vlbench import hookimpl

@hookimpl
def register_commands(subparsers):
    hello = subparsers.add_parser("hello", help="say hello")
    hello.set_defaults(func=lambda args: print("hello from a plugin") or 0)

@hookimpl
def register_stages(register):
    register("vlbench.stages:ReferenceModel", name="reference_model")
"""


def test_commands_come_from_plugins_and_experts_from_the_tm_plugin(site, capsys):
    from vlbench.cli import build_parser, main

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert commands["experts"].get_default("func").__module__ == "vlbench_plugins.tm_cli"
    assert set(Registry().names("stage")) == {"reference_model", "forgetting_history", "expert_buffer"}

    install_dist(site, "vlbench-hello", {"vlb_hello": COMMANDS}, {"hello": "vlb_hello"})
    plugins._registry = None
    assert main(["hello"]) == 0
    out, err = capsys.readouterr()
    assert out == "hello from a plugin\n"
    # Its stage takes a name vlbench has: only that name is unavailable, the command still works.
    assert "stage name 'reference_model' is registered by vlbench and vlbench-hello" in err


def test_a_command_hook_that_raises_or_clashes_is_one_line(site, capsys):
    from vlbench.cli import main

    install_dist(site, "vlbench-clash", {"vlb_clash": """
from vlbench import hookimpl

@hookimpl
def register_commands(subparsers):
    subparsers.add_parser("run")
"""}, {"clash": "vlb_clash"})
    assert main(["list"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vlbench-clash (clash) skipped: register_commands raised ArgumentError" in err
    plugins._registry = None
    assert main(["--strict-plugins", "list"]) == 2
    assert "vlbench: error: plugin vlbench-clash (clash) failed: register_commands raised" in capsys.readouterr().err


def test_one_plugin_error_for_loading_and_running_a_plugin():
    """A plugin that cannot load and a condenser that breaks the contract in a run raise the same class, so one
    `except PluginError` catches both."""
    from pathlib import Path

    import vlbench
    from vlbench import condensing, runner

    defined = sorted(str(p.relative_to(Path(vlbench.__file__).parent))
                     for p in Path(vlbench.__file__).parent.rglob("*.py") if "class PluginError" in p.read_text())
    assert defined == ["core.py"]
    assert PluginError is condensing.PluginError is runner.PluginError and issubclass(PluginError, VLBenchError)
