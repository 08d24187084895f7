"""A featurize process killed with SIGKILL resumes to exactly the uninterrupted features.

The child process featurizes a slow dataset (about 3 ms per example) into a store; the
test kills it once a few chunks are committed, finishes the work in-process and compares
with an uninterrupted run. A second scenario kills the child in the middle of writing a
chunk file (between the temporary file and its rename), the worst possible instant.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from attributor.features import FeatureStore, featurize, make_projector
from attributor.models import MLP, save_checkpoint
from attributor.tasks import ClassificationTask

N, D, CLASSES, HIDDEN = 1500, 8, 3, (16,)
CHUNK, BATCH, DIM, SEED = 50, 25, 16, 3
TIMEOUT = 60.0

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    import numpy as np
    import torch
    from torch.utils.data import Dataset
    from attributor.features import featurize, make_projector
    from attributor.models import MLP
    from attributor.tasks import ClassificationTask

    folder, store, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.set_num_threads({threads})
    inputs = torch.from_numpy(np.load(os.path.join(folder, "inputs.npy")))
    labels = torch.from_numpy(np.load(os.path.join(folder, "labels.npy")))

    class Slow(Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            time.sleep(0.003)
            return inputs[i], labels[i]

    if mode == "die-while-writing":
        # SIGKILL ourselves between writing chunk 3's temporary file and renaming it
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if os.path.basename(str(dst)) == "features_000003.npy":
                os.kill(os.getpid(), signal.SIGKILL)
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace

    checkpoints = [os.path.join(folder, "ckpt0.pt"), os.path.join(folder, "ckpt1.pt")]
    featurize(MLP({d}, {classes}, hidden={hidden}), ClassificationTask(), Slow(), checkpoints, store,
              make_projector("gaussian", dim={dim}, seed={seed}), chunk_size={chunk}, batch_size={batch},
              progress=False)
    """
).format(threads=torch.get_num_threads(), d=D, classes=CLASSES, hidden=HIDDEN, dim=DIM, seed=SEED,
         chunk=CHUNK, batch=BATCH)


def _prepare(folder: Path):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(N, D, generator=generator)
    labels = torch.randint(0, CLASSES, (N,), generator=generator)
    np.save(folder / "inputs.npy", inputs.numpy())
    np.save(folder / "labels.npy", labels.numpy())
    torch.manual_seed(1)
    model = MLP(D, CLASSES, hidden=HIDDEN)
    checkpoints = [save_checkpoint(model, folder / "ckpt0.pt")]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    checkpoints.append(save_checkpoint(model, folder / "ckpt1.pt"))
    (folder / "child.py").write_text(CHILD)
    return inputs, labels, checkpoints


def _featurize_in_process(inputs, labels, checkpoints, store):
    data = torch.utils.data.TensorDataset(inputs, labels)
    return featurize(MLP(D, CLASSES, hidden=HIDDEN), ClassificationTask(), data, checkpoints, store,
                     make_projector("gaussian", dim=DIM, seed=SEED), chunk_size=CHUNK, batch_size=BATCH,
                     progress=False)


def _committed_chunks(store: Path) -> int:
    try:
        manifest = json.loads((store / "manifest.json").read_text())
        return sum(len(done) for split in manifest["splits"].values() for done in split["chunks"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0


def _spawn(folder: Path, store: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(folder / "child.py"), str(folder), str(store), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _assert_same_store(resumed: FeatureStore, reference: FeatureStore):
    assert resumed.is_complete("train") and reference.is_complete("train")
    resumed.verify()
    for c in range(2):
        assert np.array_equal(resumed.features("train", c), reference.features("train", c)), f"features differ at checkpoint {c}"
        assert np.array_equal(resumed.out_to_loss("train", c), reference.out_to_loss("train", c)), f"Q differs at checkpoint {c}"


def _temporary_files(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill")
    inputs, labels, checkpoints = _prepare(folder)
    store = _featurize_in_process(inputs, labels, checkpoints, folder / "reference")
    return folder, inputs, labels, checkpoints, store


def test_sigkill_then_resume_matches_an_uninterrupted_run(reference):
    folder, inputs, labels, checkpoints, expected = reference
    store = folder / "killed"
    child = _spawn(folder, store, "normal")
    try:
        deadline = time.monotonic() + TIMEOUT
        while _committed_chunks(store) < 3:
            if child.poll() is not None:
                output = child.stdout.read().decode(errors="replace")
                pytest.fail(f"the featurize child exited (rc={child.returncode}) before it was killed; "
                            f"increase N or the per-example sleep so that it is still running\n{output}")
            if time.monotonic() > deadline:
                pytest.fail("the featurize child committed fewer than 3 chunks in 60 s")
            time.sleep(0.005)
        still_running = child.poll() is None
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert still_running, "the child finished before it could be killed; increase the work"
    assert child.returncode == -signal.SIGKILL
    killed = FeatureStore.open(store)
    committed = int(killed.done_mask("train", 0).sum() + killed.done_mask("train", 1).sum())
    assert 3 * CHUNK <= committed < 2 * N, "the store must be partially written when the child is killed"
    killed.verify()  # what was committed is intact

    resumed = _featurize_in_process(inputs, labels, checkpoints, store)
    _assert_same_store(FeatureStore.open(store), expected)
    assert _temporary_files(store) == []
    assert resumed.is_complete("train")


@pytest.fixture(scope="module")
def killed_while_writing(reference):
    folder, inputs, labels, checkpoints, expected = reference
    store = folder / "killed-while-writing"
    child = _spawn(folder, store, "die-while-writing")
    try:
        output = child.communicate(timeout=TIMEOUT)[0].decode(errors="replace")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, output
    left_behind = _temporary_files(store)
    killed = FeatureStore.open(store)
    assert [i for i, _, _ in killed.missing_chunks("train", 0)][:1] == [3]
    _featurize_in_process(inputs, labels, checkpoints, store)
    return store, expected, left_behind


def test_sigkill_while_writing_a_chunk_resumes_exactly(killed_while_writing):
    store, expected, left_behind = killed_while_writing
    assert any("features_000003.npy" in name for name in left_behind), left_behind  # the kill hit mid-write
    _assert_same_store(FeatureStore.open(store), expected)


def test_sigkill_while_writing_leaves_no_temporary_files_after_resume(killed_while_writing):
    store, _, _ = killed_while_writing
    assert _temporary_files(store) == []
