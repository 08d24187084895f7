"""Make this example's inputs in ./work: a CSV of your own and checkpoints of your own model.

Stands in for what a user already has: the breast-cancer table written as train.csv and
test.csv (named columns, a text label "malignant" / "benign"), and three checkpoints of
model.py's TanhClassifier trained by a plain PyTorch loop. Then:

    python examples/tabular_csv/prepare.py
    attributor run --config examples/tabular_csv/config.yaml --out runs/tabular
"""

import csv
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import build  # noqa: E402


def main(work: Path = HERE / "work") -> None:
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    bunch = load_breast_cancer()
    names = [n.replace(" ", "_") for n in bunch.feature_names]
    labels = np.array(bunch.target_names)[bunch.target]  # "malignant" / "benign"
    order = np.random.default_rng(0).permutation(len(labels))
    parts = {"train": order[: int(0.75 * len(order))], "test": order[int(0.75 * len(order)):]}
    for split, rows in parts.items():
        with open(work / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(names + ["diagnosis"])
            writer.writerows([[f"{v:.6g}" for v in bunch.data[i]] + [labels[i]] for i in rows])
    # the user's training: classes in sorted order (benign = 0, malignant = 1), as attributor encodes text labels
    X = torch.tensor(bunch.data[parts["train"]], dtype=torch.float32)
    y = torch.tensor((labels[parts["train"]] == "malignant").astype(np.int64))
    torch.manual_seed(0)
    model = build(X.shape[1], 2)
    model.mean.copy_(X.mean(0))
    model.scale.copy_(X.std(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(1, 301):
        optimizer.zero_grad()
        F.cross_entropy(model(X), y).backward()
        optimizer.step()
        if epoch % 100 == 0:
            torch.save(model.state_dict(), work / "checkpoints" / f"epoch_{epoch}.pt")
    print(f"wrote {work}/train.csv, test.csv and checkpoints/epoch_{{100,200,300}}.pt")


if __name__ == "__main__":
    main()
