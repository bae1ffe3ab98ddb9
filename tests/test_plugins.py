import pytest

from vlbench.api import VLBenchError
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


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    for var in ("VLBENCH_PLUGINS", "VLBENCH_DISABLE_PLUGINS", "VLBENCH_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_builtins_come_through_entry_points():
    reg = Registry()
    assert {"random", "full"} <= set(reg.names("condenser"))
    assert "tinyvit-minilm" in reg.names("backbone")
    assert "synthscenes" in reg.names("dataset")
    assert reg.provenance("condenser", "random")["distribution"] == "vlbench"


def test_third_party_entry_point_is_discovered(site):
    install_dist(site, "vlbench-firstpairs", {"vlb_first": CONDENSER.format(name="first")}, {"first": "vlb_first"}, "2.3")
    reg = Registry()
    assert reg.get("condenser", "first").__name__ == "FirstPairs"
    assert reg.provenance("condenser", "first") == {"name": "first", "distribution": "vlbench-firstpairs", "version": "2.3"}


def test_unknown_name_lists_known_and_suggests_closest():
    with pytest.raises(VLBenchError) as e:
        Registry().get("condenser", "randon")
    message = str(e.value)
    assert "known:" in message and "full" in message and "did you mean 'random'?" in message


def test_broken_plugin_is_skipped_and_reported(site, capsys):
    install_dist(site, "vlbench-broken", {"vlb_broken": "import no_such_module_anywhere\n"}, {"broken": "vlb_broken"})
    reg = Registry()
    assert "random" in reg.names("condenser")
    assert "vlbench-broken" in capsys.readouterr().err
    with pytest.raises(PluginError, match="vlbench-broken"):
        Registry(strict=True)


def test_name_collision_names_both_distributions(site):
    install_dist(site, "vlbench-copycat", {"vlb_copy": CONDENSER.format(name="random")}, {"copy": "vlb_copy"})
    with pytest.raises(PluginError, match="vlbench.*vlbench-copycat|vlbench-copycat.*vlbench"):
        Registry()


def test_block_list_skips_a_distribution(site, monkeypatch):
    install_dist(site, "vlbench-firstpairs", {"vlb_first2": CONDENSER.format(name="first2")}, {"first2": "vlb_first2"})
    monkeypatch.setenv("VLBENCH_DISABLE_PLUGINS", "vlbench-firstpairs")
    assert "first2" not in Registry().names("condenser")
