"""vlbench's own condensers, backbones and data sets: one entry point, named by import path.

Nothing heavy is imported here: each module (and torch, timm, peft, transformers with it) is
imported only when its name is used, so that `vlbench list` and `vlbench plugins` answer at once.
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
}
BACKBONES = {
    "tinyvit-minilm": "vlbench_plugins.tinyvit_minilm:TinyViTMiniLM",
    "nfnet-bert": "vlbench_plugins.nfnet_bert:NFNetBERT",
    "clip": "vlbench_plugins.clip_lora:CLIPLoRA",
}
DATASETS = {
    "synthscenes": "vlbench.data.synthscenes:SynthScenes",
    "flickr30k": "vlbench_plugins.flickr_coco:Flickr30K",
    "coco": "vlbench_plugins.flickr_coco:COCO",
}


@hookimpl
def register_condensers(register):
    for name, path in CONDENSERS.items():
        register(path, name=name)


@hookimpl
def register_backbones(register):
    for name, path in BACKBONES.items():
        register(path, name=name)


@hookimpl
def register_datasets(register):
    for name, path in DATASETS.items():
        register(path, name=name)
