"""First-party plugin: Flickr30K and MS-COCO with Karpathy's splits, read from --data-root.

Layouts (both annotation forms) and where to download: docs/data.md.
"""
from vlbench.data.sources import KarpathySource


class Flickr30K(KarpathySource):
    name = "flickr30k"
    karpathy_file = "dataset_flickr30k.json"
    karpathy_image_dir = "flickr30k-images"  # Karpathy's file names images without a directory
    blip_files = {"train": "flickr30k_train.json", "val": "flickr30k_val.json", "test": "flickr30k_test.json"}
    expected_images = {"train": 29000, "val": 1014, "test": 1000}


class COCO(KarpathySource):
    name = "coco"
    karpathy_file = "dataset_coco.json"
    karpathy_image_dir = ""  # its filepath field (train2014/, val2014/) starts at the root
    blip_files = {split: f"coco_karpathy_{split}.json" for split in ("train", "val", "test")}
    expected_images = {"train": 113287, "val": 5000, "test": 5000}  # train includes Karpathy's restval
