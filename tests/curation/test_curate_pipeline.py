"""``attributor curate --config FILE --out DIR`` on a user's files: stages, reuse, outputs, refusals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from attributor.cli import main


def _tabular(folder, noise: float = 0.3):
    """Wine (scikit-learn) as CSV files: train with flipped labels on a fraction, clean validation and test."""
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    parts = {"train": order[:100], "val": order[100:139], "test": order[139:]}
    flipped = set(rng.choice(parts["train"], size=int(noise * 100), replace=False).tolist())
    names = [f"f{i}" for i in range(x.shape[1])]
    for name, rows in parts.items():
        with (folder / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", *names, "label"])
            for i in rows:
                label = (y[i] + 1) % 3 if (name == "train" and i in flipped) else y[i]
                writer.writerow([f"r{i}", *x[i].round(4), f"class_{label}"])
    config = {"data": {"train": "train.csv", "validation": "val.csv", "test": "test.csv", "target": "label", "id": "id",
                       "features": names},
              "curate": {"clusters": 6, "budget": 0.6, "steps": 150, "hidden": 16, "baselines": ["random", "loss-rank"]}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder / "config.json", {f"r{i}" for i in flipped}


def test_pipeline_writes_every_stage_and_reuses_unchanged_ones(tmp_path, capsys):
    config, flipped = _tabular(tmp_path)
    out = tmp_path / "run"
    assert main(["curate", "--config", str(config), "--out", str(out)]) == 0
    printed, log = capsys.readouterr()
    assert "cluster-influence" in printed and "report:" in printed
    for stage in ("data", "reference", "embed", "clusters", "influence", "selection", "retrain", "eval"):
        assert (out / stage / "settings.json").is_file(), stage
    kept = list(csv.DictReader((out / "selection" / "kept.csv").open()))
    assert len(kept) == 60 and all(float(r["weight"]) == 1.0 for r in kept)
    metrics = json.loads((out / "retrain" / "metrics.json").read_text())
    assert set(metrics) == {"full", "cluster-influence", "random", "loss-rank"}
    assert metrics["random"]["kept"] == pytest.approx(0.6)
    # the loss-rank baseline drops more of the flipped labels than chance (40% at 60% kept)
    loss_kept = {r["id"] for r in csv.DictReader((out / "selection" / "loss-rank.csv").open())}
    assert len(flipped - loss_kept) / len(flipped) > 0.5
    groups = list(csv.DictReader((out / "influence" / "groups.csv").open()))
    examples = list(csv.DictReader((out / "influence" / "examples.csv").open()))
    assert len(examples) == 100 and sum(int(g["size"]) for g in groups) == 100
    report = (out / "eval" / "report.html").read_text()
    assert "Influence per group" in report and "data:image/png;base64" in report

    # a rerun reuses every stage; a new budget redoes selection, retrain and eval only
    assert main(["curate", "--config", str(config), "--out", str(out)]) == 0
    assert capsys.readouterr().err.count("unchanged, reused") == 8
    raw = json.loads(config.read_text())
    raw["curate"]["budget"] = 0.4
    config.write_text(json.dumps(raw))
    assert main(["curate", "--config", str(config), "--out", str(out)]) == 0
    log = capsys.readouterr().err
    assert log.count("unchanged, reused") == 5 and "selection: done" in log and "retrain: done" in log
    assert len(list(csv.DictReader((out / "selection" / "kept.csv").open()))) == 40


def test_text_data_is_embedded_and_reported_with_its_items(tmp_path):
    from attributor.data.synthetic import topic_sentences

    rows = topic_sentences(80, seed=1)
    for name, part in (("train", rows[:50]), ("val", rows[50:])):
        with (tmp_path / f"{name}.jsonl").open("w") as handle:
            for r in part:
                handle.write(json.dumps(r) + "\n")
    (tmp_path / "c.yaml").write_text("data: {train: train.jsonl, validation: val.jsonl, target: label, text: text}\n"
                                     "curate: {clusters: 4, steps: 80, hidden: 8, embed: features, baselines: [random]}\n")
    assert main(["curate", "-c", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "run"), "-q"]) == 0
    md = (tmp_path / "run" / "eval" / "results.md").read_text()
    assert "validation (no test set was given)" in md
    assert any(r["text"][:20] in md for r in rows[:50])  # example items of the groups are shown as text


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["data"].pop("features"), "exactly one of data.text or data.features"),
    (lambda c: c["curate"].update(budget=1.5), "curate.budget"),
    (lambda c: c["curate"].update(baselines=["magic"]), "unknown baseline 'magic'"),
    (lambda c: c["data"].update(target="nope"), "column 'nope'"),
    (lambda c: c["data"].update(validation="missing.csv"), "missing.csv"),
    (lambda c: c.update(extra=1), "extra: unknown key"),
])
def test_bad_configs_are_one_line_and_write_nothing(tmp_path, capsys, edit, message):
    config, _ = _tabular(tmp_path)
    raw = json.loads(config.read_text())
    edit(raw)
    config.write_text(json.dumps(raw))
    assert main(["curate", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "run" / "data").exists()
