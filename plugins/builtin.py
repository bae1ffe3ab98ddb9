"""vlbench's own condensers, backbones, data sets, shared stages and commands: one entry point.

Names are registered by import path. Nothing heavy is imported here: each module (and torch, timm,
peft, transformers with it) is imported only when its name is used, so that `vlbench list` and
`vlbench plugins` answer at once; the command modules import nothing heavy until a command runs.
A new first-party plugin adds its line here.
"""
from vlbench import hookimpl

CONDENSERS = {
    "random": "vlbench_plugins.random_subset:RandomPairs",
    "full": "vlbench_plugins.full_data:FullData",
    "herding": "vlbench_plugins.herding:Herding",
    "kcenter": "vlbench_plugins.kcenter:KCenter",
    "forgetting": "vlbench_plugins.forgetting:Forgetting",
    "tm": "vlbench_plugins.tm:TrajectoryMatching",
    "tm-lora": "vlbench_plugins.tm_lora:LoRATrajectoryMatching",
    "lors": "vlbench_plugins.lors:LoRS",
    "mmdm": "vlbench_plugins.mmdm:MultimodalDistributionMatching",
}
BACKBONES = {
    "tinyvit-minilm": "vlbench_plugins.tinyvit_minilm:TinyViTMiniLM",
    "nfnet-bert": "vlbench_plugins.nfnet_bert:NFNetBERT",
    "clip": "vlbench_plugins.clip_lora:CLIPLoRA",
    "convnet-minilm": "vlbench_plugins.convnet_minilm:ConvNetMiniLM",
    "convnetw32-minilm": "vlbench_plugins.convnet_minilm:ConvNetW32MiniLM",
}
STAGES = {
    "reference_model": "vlbench.stages:ReferenceModel",  # the harness's: any condenser may use it
    "forgetting_history": "vlbench_plugins.forgetting:ForgettingHistory",
    "expert_buffer": "vlbench.tm:ExpertBufferStage",
}
DATASETS = {
    "synthscenes": "vlbench.data.synthscenes:SynthScenes",
    "flickr30k": "vlbench_plugins.flickr_coco:Flickr30K",
    "coco": "vlbench_plugins.flickr_coco:COCO",
    "emoji": "vlbench_plugins.emoji:EmojiGlyphs",
}


def _each(register, names: dict[str, str]) -> None:
    for name, path in names.items():
        register(path, name=name)


@hookimpl
def register_condensers(register):
    _each(register, CONDENSERS)


@hookimpl
def register_backbones(register):
    _each(register, BACKBONES)


@hookimpl
def register_datasets(register):
    _each(register, DATASETS)


@hookimpl
def register_stages(register):
    _each(register, STAGES)


@hookimpl
def register_commands(subparsers):
    from vlbench_plugins.tm_cli import add_experts_command

    add_experts_command(subparsers)
