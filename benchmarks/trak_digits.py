"""Speed baseline of the TRAK spine on the demo problem (digits MLP, 4 checkpoints).

Measures, in one process on the same batches:
  * plain forward + backward of the mean training loss (the cost floor of featurization),
  * featurize with the torch.func per-example path and each projector,
  * TRAK fit + score of all test queries + self-influence,
and the mislabel-detection AUC of each, beside a random ranking.

    python benchmarks/trak_digits.py --out runs/bench-trak

writes runs/bench-trak/trak_digits.csv; the recorded table is in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import resource
import tempfile
import time
from pathlib import Path

import torch

from attributor.data import load_dataset
from attributor.evaluation import detection_auc
from attributor.features import featurize, make_projector
from attributor.methods import get_method
from attributor.models import build_model, load_checkpoint
from attributor.models.training import train
from attributor.tasks import ClassificationTask


def forward_backward_seconds(model, task, dataset, checkpoints, batch_size: int) -> float:
    start = time.perf_counter()
    for path in checkpoints:
        load_checkpoint(model, path)
        for lo in range(0, len(dataset), batch_size):
            batch = dataset[lo : lo + batch_size]
            model.zero_grad()
            task.train_loss(model, batch).mean().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_dataset("digits", label_noise=0.1, seed=0)
    task = ClassificationTask()
    model = build_model("mlp", 64, 10, hidden=[128])
    work = Path(tempfile.mkdtemp(prefix="bench-trak-"))
    checkpoints = train(model, task, data.train(), work / "ckpt", epochs=40, checkpoint_epochs=[10, 20, 30, 40], progress=False)
    n_params = sum(p.numel() for p in model.parameters())
    train_set, test_set = data.train(), data.test()
    floor = forward_backward_seconds(model, task, train_set, checkpoints, args.batch_size)
    n_rows = len(train_set) * len(checkpoints)
    rows = [{"stage": "forward+backward (floor)", "projector": "-", "proj_dim": "-", "examples_per_s": round(n_rows / floor),
             "seconds": round(floor, 3), "ratio_to_fwd_bwd": 1.0, "mislabel_auc": "", "mislabel_auc_random": ""}]
    for kind, dim in (("identity", None), ("gaussian", 1024), ("rademacher", 1024), ("gaussian", 4096)):
        projector = make_projector(kind, dim, seed=0)
        store_path = work / f"store-{kind}-{dim}"
        start = time.perf_counter()
        store = featurize(model, task, train_set, checkpoints, store_path, projector, split="train",
                          batch_size=args.batch_size, progress=False)
        seconds = time.perf_counter() - start
        featurize(model, task, test_set, checkpoints, store_path, projector, split="test", batch_size=args.batch_size, progress=False)
        start = time.perf_counter()
        method = get_method("trak").fit(store)
        method.score("test", topk=10)
        self_influence = method.self_influence()
        score_seconds = time.perf_counter() - start
        auc = detection_auc(self_influence, data.flipped)
        rows.append({"stage": "featurize train", "projector": kind, "proj_dim": store.dim, "examples_per_s": round(n_rows / seconds),
                     "seconds": round(seconds, 3), "ratio_to_fwd_bwd": round(seconds / floor, 2),
                     "mislabel_auc": round(auc["auc"], 4), "mislabel_auc_random": round(auc["auc_random"], 4)})
        rows.append({"stage": "TRAK fit+score+self-influence", "projector": kind, "proj_dim": store.dim,
                     "examples_per_s": "", "seconds": round(score_seconds, 3), "ratio_to_fwd_bwd": "",
                     "mislabel_auc": "", "mislabel_auc_random": ""})
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "trak_digits.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model: MLP 64-128-10, {n_params} parameters; {len(train_set)} train x {len(checkpoints)} checkpoints; "
          f"{len(test_set)} queries; torch threads {torch.get_num_threads()}; peak RSS {peak_mb:.0f} MB")
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
