"""Plugin options declared once (a `Config` dataclass), checked when given, listed by `vlbench list --options`."""
import dataclasses
from dataclasses import dataclass

import pytest

from vlbench.cli import main
from vlbench.core import VLBenchError, make_config, option, option_defaults


@dataclass
class Example:
    rank: int = option(4, "the rank")
    scale: float = option(1.0, "the scale")
    path: str | None = option(None, "a file, or null")
    targets: list[str] = option(["a"], "modules")


def test_make_config_checks_names_and_types_in_one_line():
    assert make_config("backbone", "x", Example, {"scale": 2, "path": "p"}) == Example(scale=2, path="p")  # an int is a float
    assert option_defaults(Example) == {"rank": 4, "scale": 1.0, "path": None, "targets": ["a"]}
    assert Example().targets is not Example().targets  # a list default is a fresh copy
    for given, message in [({"rnak": 4}, "backbone 'x' has no option(s) rnak (options: path, rank, scale, targets)"),
                           ({"rank": "4"}, "backbone 'x' option 'rank' must be int, got '4'"),
                           ({"rank": True}, "option 'rank' must be int, got True"),
                           ({"scale": "1e-2"}, "option 'scale' must be float, got '1e-2'"),  # YAML reads 1e-2 as a string
                           ({"path": 3}, "option 'path' must be str | None, got 3"),
                           ({"targets": "qkv"}, "option 'targets' must be list[str], got 'qkv'")]:
        with pytest.raises(VLBenchError) as e:
            make_config("backbone", "x", Example, given)
        assert message in str(e.value)


def test_backbones_declare_a_config_and_refuse_bad_values_and_combinations():
    from vlbench.plugins import registry

    reg = registry()
    for name in reg.names("backbone"):
        cls = reg.get("backbone", name)
        assert cls.Config.__dataclass_fields__ and cls.defaults == option_defaults(cls.Config), name
    vit, convnet = reg.get("backbone", "tinyvit-minilm"), reg.get("backbone", "convnet-minilm")
    with pytest.raises(VLBenchError, match="image_size 30 must be a multiple of patch_size 12"):
        vit(image_size=30)
    with pytest.raises(VLBenchError, match="option 'lora_rank' must be int"):
        vit(lora_rank=4.5)
    with pytest.raises(VLBenchError, match="too small for depth 3"):
        convnet(image_size=4)
    with pytest.raises(VLBenchError, match="normalization must be 'model' or 'clip'"):
        reg.get("backbone", "nfnet-bert")(normalization="imagenet")  # before any weight is loaded


def test_every_first_party_option_has_help():
    from vlbench.plugins import registry

    reg, without_help = registry(), []
    for kind in ("condenser", "backbone", "dataset"):
        for name in reg.names(kind):
            if reg.origin(kind, name).distribution == "vlbench":
                fields = dataclasses.fields(reg.get(kind, name).Config)
                without_help += [f"{kind} {name}: {f.name}" for f in fields if not f.metadata.get("help")]
    assert not without_help


def test_data_sets_declare_a_config_checked_in_one_line():
    from vlbench.plugins import registry

    flickr = registry().get("dataset", "flickr30k")
    assert flickr.defaults == {"caption_cleaning": "vlbench"} and flickr().config.caption_cleaning == "vlbench"
    assert flickr(caption_cleaning="official").config.caption_cleaning == "official"
    with pytest.raises(VLBenchError, match=r"data set 'flickr30k' has no option\(s\) cleaning \(options: caption_cleaning\)"):
        flickr(cleaning="official")
    with pytest.raises(VLBenchError, match="data set 'flickr30k' option 'caption_cleaning' must be str, got 1"):
        flickr(caption_cleaning=1)
    assert dataclasses.asdict(registry().get("dataset", "synthscenes")().config) == {}


def test_tm_segments_beyond_the_experts_fail_at_resolution():
    from vlbench.core import RunSpec
    from vlbench.runner import Run

    options = {"train_epochs": 2, "max_start_epoch": 2, "expert_epochs": 1}
    with pytest.raises(VLBenchError, match="start epochs up to 2 \\+ expert_epochs 1 reach beyond the experts' train_epochs 2"):
        Run(RunSpec("tm-lora", 5, condenser_options=options))
    Run(RunSpec("tm-lora", 5, condenser_options={**options, "start_epochs": "exclusive"}))  # 0..1


def test_list_options_prints_defaults_and_help(capsys):
    assert main(["list", "--options", "tinyvit-minilm"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "backbone tinyvit-minilm (vlbench 0.1.0): options:"
    (rank,) = [line.split(None, 2) for line in out if line.split()[0] == "lora_rank"]
    assert rank[1] == "4" and rank[2].startswith("rank of the LoRA adapters")
    assert any(line.split()[:2] == ["lora_targets", "[qkv,"] for line in out)
    assert main(["list", "--options", "full"]) == 0
    assert "epochs  8.0" in capsys.readouterr().out
    assert main(["list", "--options", "tm-lora"]) == 0
    (iterations,) = [line.split(None, 2) for line in capsys.readouterr().out.splitlines() if line.split()[0] == "iterations"]
    assert iterations[1:] == ["100", "outer iterations (steps of the synthetic data) [tuned: one of 50, 100, 200]"]
    assert main(["list", "--options", "coco"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split(None, 2)[:2] == ["caption_cleaning", "vlbench"]
    assert main(["list", "--options", "tinyvit"]) == 2
    assert "no plugin is called 'tinyvit' (did you mean 'tinyvit-minilm'?)" in capsys.readouterr().err


def test_every_configured_plugin_kind_reads_its_options_one_way():
    """Condensers, backbones and data sets alike: `self.config` is an instance of their `Config`, values as
    attributes; a backbone's non-default options (its id) are a separate dict. `option` is public API."""
    import vlbench
    from vlbench.plugins import registry

    reg = registry()
    for kind in ("condenser", "backbone", "dataset"):
        for name in reg.names(kind):
            cls = reg.get(kind, name)
            plugin = cls()
            assert isinstance(plugin.config, cls.Config), (kind, name)
            assert dataclasses.asdict(plugin.config) == option_defaults(cls.Config), (kind, name)
            assert not hasattr(plugin, "options"), (kind, name)
    backbone = reg.get("backbone", "tinyvit-minilm")(lora_rank=2, dropout=0.0)  # dropout 0.0: its default
    assert backbone.config.lora_rank == 2 and backbone.non_default_options == {"lora_rank": 2}
    assert "option" in vlbench.__all__ and vlbench.option is option
