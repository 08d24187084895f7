"""Fuzz the loaders of what users hand back to attributor: config files, store manifests, saved scores.

Each case takes a valid file, applies a few seeded random structural mutations (drop a key,
put a value of the wrong type, truncate, overwrite bytes with random ones, replace the
whole document) and loads the result. Loading may succeed or raise an
:class:`~attributor.errors.AttributorError` subclass (one clear line for the user); any
other exception is a bug, reported with the case's seed and mutations so it replays.
Issue 19, "What to build" item 5.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

from zoo import TINY_RUN, classification_data, mlp, train_and_save

from attributor.config import load_config
from attributor.errors import AttributorError
from attributor.features import FeatureStore, featurize, make_projector
from attributor.scores import Scores

CASES = 500  # per loader; all three together run in a few seconds

#: values of every JSON type, and some that are valid JSON but absurd in any field
ODD_VALUES: list[Any] = [None, True, False, 0, -1, 1, 2 ** 63, -(2 ** 70), 0.5, -1e308, 1e308, "", "x", "float32",
                         "../../etc/passwd", "0", "-1", [], [1, 2], ["a"], [[]], {}, {"a": 1}, {"0": {}}, [None], "NaN"]


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) to a node inside ``node``, the root excluded."""
    found = []
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return found
    for key, child in items:
        found.append(prefix + (key,))
        found.extend(_paths(child, prefix + (key,)))
    return found


def _parent(doc: Any, path: tuple) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def _mutate_structure(doc: Any, rng: random.Random) -> tuple[Any, str]:
    """One structural mutation of a parsed document: returns the new document and what was done."""
    paths = _paths(doc)
    kind = rng.choice(["drop", "wrong type", "wrong type", "wrap", "rename", "whole"] if paths else ["whole"])
    if kind == "whole":
        value = rng.choice(ODD_VALUES)
        return value, f"document -> {value!r}"
    path = rng.choice(paths)
    parent = _parent(doc, path)
    if kind == "drop":
        del parent[path[-1]]
        return doc, f"drop {path}"
    if kind == "wrong type":
        value = rng.choice(ODD_VALUES)
        parent[path[-1]] = value
        return doc, f"{path} -> {value!r}"
    if kind == "wrap":
        parent[path[-1]] = [parent[path[-1]]] if rng.random() < 0.5 else {"value": parent[path[-1]]}
        return doc, f"wrap {path}"
    if isinstance(parent, dict):  # rename
        parent[f"{path[-1]}_"] = parent.pop(path[-1])
        return doc, f"rename {path}"
    parent.append(parent[path[-1]])
    return doc, f"duplicate {path}"


def _mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    kind = rng.choice(["truncate", "random bytes", "insert", "empty"])
    if kind == "empty" or not data:
        return b"", "empty file"
    at = rng.randrange(len(data))
    if kind == "truncate":
        return data[:at], f"truncate at {at}"
    junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    if kind == "insert":
        return data[:at] + junk + data[at:], f"insert {junk!r} at {at}"
    return data[:at] + junk + data[at + len(junk):], f"overwrite {junk!r} at {at}"


def _fuzz_file(file: Path, original: bytes, rng: random.Random, parse: Callable[[bytes], Any],
               dump: Callable[[Any], bytes]) -> list[str]:
    """Rewrite ``file`` from ``original`` with 1-3 mutations; returns what was done."""
    done: list[str] = []
    data = original
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.7:
            try:
                doc = parse(data)
            except Exception:  # already broken text: keep breaking bytes
                doc = None
            if doc is not None:
                doc, what = _mutate_structure(doc, rng)
                data = dump(doc)
                done.append(what)
                continue
        data, what = _mutate_bytes(data, rng)
        done.append(what)
    file.write_bytes(data)
    return done


def _json_dump(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _run_cases(name: str, make_case: Callable[[random.Random], tuple[list[str], Callable[[], None]]]) -> None:
    problems = []
    for seed in range(CASES):
        rng = random.Random(f"{name}-{seed}")
        done, load = make_case(rng)
        try:
            load()
        except AttributorError as err:
            text = str(err)
            if not text.strip() or "\n" in text.strip():
                problems.append(f"seed {seed} ({'; '.join(done)}): not one line: {text!r}")
        except Exception as err:  # noqa: BLE001 - the point of the test
            problems.append(f"seed {seed} ({'; '.join(done)}): {type(err).__name__}: {err}")
    assert not problems, f"{len(problems)} of {CASES} {name} cases ended in an internal error:\n" + "\n".join(problems[:15])


# -- config files -------------------------------------------------------------------------------
def test_fuzz_config_loader(tmp_path):
    valid = {**TINY_RUN, "task": {"name": "classification"}, "score": {"method": "trak", "topk": 5, "checkpoints": [0, 1]},
             "data": {**TINY_RUN["data"], "test_fraction": 0.2, "seed": 3}, "report": {"compare": None}}
    load_config(None)  # the defaults load
    for suffix, dump, parse in ((".yaml", lambda d: yaml.safe_dump(d).encode(), lambda b: yaml.safe_load(b.decode())),
                                (".json", _json_dump, lambda b: json.loads(b))):
        file = tmp_path / f"config{suffix}"
        original = dump(valid)
        file.write_bytes(original)
        load_config(file)  # the unmutated file is valid

        def case(rng, file=file, original=original, parse=parse, dump=dump):
            done = _fuzz_file(file, original, rng, parse, dump)
            sets = [rng.choice(["featurize.proj_dim=[1]", "score.topk=-3", "data=5", "train.epochs={}", "x.y=1",
                                "featurize.proj_dim=1e999", "data.max_train=null"])] if rng.random() < 0.2 else []
            return done + sets, lambda: load_config(file, sets)

        _run_cases(f"config{suffix}", case)


# -- feature store manifests ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def store_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-store")
    inputs, labels = classification_data(24, d=4, n_classes=3, seed=0, dtype=torch.float32)
    model = mlp(d=4, n_classes=3, hidden=(5,), dtype=torch.float32)
    checkpoints = train_and_save(model, inputs, labels, root / "ckpts", n_checkpoints=2)
    projector = make_projector("gaussian", 6, seed=0)
    for split, rows in (("train", slice(0, 18)), ("test", slice(18, 24))):
        featurize(model, _task(), TensorDataset(inputs[rows], labels[rows]), checkpoints, root / "store", projector,
                  split=split, chunk_size=5, batch_size=4, progress=False)
    return root / "store"


def _task():
    from attributor.tasks import ClassificationTask

    return ClassificationTask()


def _use_store(path: Path) -> None:
    """Read the store as its readers do; whatever was refused, `store repair` it and read it again."""
    try:
        _read_store(path)
    except AttributorError:
        pass
    FeatureStore.open(path).repair()
    _read_store(path)


def _read_store(path: Path) -> None:
    """What the readers of a store do with it: open, list, read every split, check."""
    store = FeatureStore.open(path)
    store.check()
    for split in store.splits:
        store.split_size(split)
        store.chunk_bounds(split)
        for checkpoint in range(store.n_checkpoints):
            store.done_mask(split, checkpoint)
            store.missing_chunks(split, checkpoint)
        if store.is_complete(split):
            store.require_complete(split)
            for checkpoint in range(store.n_checkpoints):
                assert store.features(split, checkpoint).shape == (store.split_size(split), store.dim)
                store.out_to_loss(split, checkpoint)
    store.n_committed()
    store.verify()


def test_fuzz_store_manifest_loader(tmp_path, store_folder):
    _read_store(store_folder)  # the unmutated store is valid
    original = (store_folder / "manifest.json").read_bytes()
    work = tmp_path / "store"
    shutil.copytree(store_folder, work)

    def case(rng):
        done = _fuzz_file(work / "manifest.json", original, rng, json.loads, _json_dump)
        if rng.random() < 0.3:  # and maybe damage a chunk file too
            chunk = rng.choice(sorted(work.glob("*/ckpt*/*.npy")))
            backup = store_folder / chunk.relative_to(work)
            data, what = _mutate_bytes(backup.read_bytes(), rng)
            chunk.write_bytes(data)
            done.append(f"{chunk.name}: {what}")
        else:
            for chunk in store_folder.glob("*/ckpt*/*.npy"):
                shutil.copyfile(chunk, work / chunk.relative_to(store_folder))
        return done, lambda: _use_store(work)

    _run_cases("manifest", case)


# -- saved scores -------------------------------------------------------------------------------
def test_fuzz_scores_loader(tmp_path):
    rng0 = np.random.default_rng(0)
    valid = tmp_path / "valid"
    Scores(top_indices=rng0.integers(0, 7, (4, 3)), top_values=rng0.normal(size=(4, 3)),
           bottom_indices=rng0.integers(0, 7, (4, 3)), bottom_values=rng0.normal(size=(4, 3)),
           values=rng0.normal(size=(4, 7)).astype(np.float32), meta={"method": {"method": "trak"}}).save(valid)
    Scores.load(valid)
    work = tmp_path / "scores"

    def load(verify: bool) -> None:
        scores = Scores.load(work, verify=verify)
        scores.n_queries
        for array in (scores.top_indices, scores.top_values, scores.bottom_indices, scores.bottom_values):
            np.asarray(array).sum()

    def case(rng):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(valid, work)
        done = []
        if rng.random() < 0.7:
            done += _fuzz_file(work / "scores.json", (valid / "scores.json").read_bytes(), rng, json.loads, _json_dump)
        if rng.random() < 0.5 or not done:
            array = rng.choice(sorted(work.glob("*.npy")))
            data, what = _mutate_bytes(array.read_bytes(), rng)
            array.write_bytes(data)
            done.append(f"{array.name}: {what}")
        verify = rng.random() < 0.7
        return done + ([] if verify else ["verify=False"]), lambda: load(verify)

    _run_cases("scores", case)
