"""featurize: exact features, resumption after a crash, refusal of NaN, no work when done."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo import FailingDataset, ForbiddenDataset, classification_data, dataset, mlp, train_and_save

from attributor.errors import DataError, StoreMismatchError
from attributor.features import FeatureStore, featurize, make_projector
from attributor.features.gradients import per_example_gradients, tracked_parameter_names
from attributor.models import load_checkpoint
from attributor.tasks import ClassificationTask, Task

N = 40


@pytest.fixture
def problem(tmp_path):
    inputs, labels = classification_data(N, d=6, n_classes=3, seed=0)
    model = mlp(d=6, n_classes=3, hidden=(8,), seed=0)
    checkpoints = train_and_save(model, inputs, labels, tmp_path / "ckpts", n_checkpoints=2)
    return model, inputs, labels, checkpoints


def _run(problem, path, data=None, projector=None, **kwargs):
    model, inputs, labels, checkpoints = problem
    kwargs = {"dtype": "float64", "chunk_size": 16, "batch_size": 5, "progress": False, **kwargs}
    return featurize(model, ClassificationTask(), data if data is not None else dataset(inputs, labels),
                     checkpoints, path, projector or make_projector("identity"), **kwargs)


def test_identity_features_are_the_per_example_gradients(problem, tmp_path):
    model, inputs, labels, checkpoints = problem
    store = _run(problem, tmp_path / "s")
    reference = mlp(seed=99)  # other initial weights: featurize must load every checkpoint
    task = ClassificationTask()
    names = tracked_parameter_names(reference, task)
    assert store.dim == sum(p.numel() for p in reference.parameters())
    assert store.chunk_bounds("train")[-1] == (2, 32, 40)
    for c, path in enumerate(checkpoints):
        load_checkpoint(reference, path)
        expected = per_example_gradients(reference, task, (inputs, labels), names).numpy()
        features = store.features("train", c)
        assert features.shape == (N, store.dim) and features.dtype == np.float64
        np.testing.assert_allclose(features, expected, rtol=1e-12, atol=1e-14)
        with torch.no_grad():
            p_y = torch.softmax(reference(inputs), dim=-1)[torch.arange(N), labels].numpy()
        np.testing.assert_allclose(store.out_to_loss("train", c), 1 - p_y, rtol=1e-12, atol=1e-14)
    # the two checkpoints really differ
    assert not np.allclose(store.features("train", 0), store.features("train", 1))


def test_projected_features_are_gradients_times_the_checkpoint_matrix(problem, tmp_path):
    model, inputs, labels, checkpoints = problem
    exact = _run(problem, tmp_path / "exact")
    projector = make_projector("gaussian", dim=7, seed=5, block_rows=20)
    store = _run(problem, tmp_path / "projected", projector=projector)
    for c in range(2):
        matrix = projector.matrix(exact.dim, c).double().numpy()
        np.testing.assert_allclose(store.features("train", c), exact.features("train", c) @ matrix, rtol=1e-10, atol=1e-12)


def test_model_training_mode_is_restored(problem, tmp_path):
    model = problem[0]
    model.train()
    _run(problem, tmp_path / "s")
    assert model.training


def _with_own_weights(model):
    """``model`` with weights of its own (not a checkpoint's) and mixed train/eval modes."""
    model.load_state_dict(mlp(d=6, n_classes=3, hidden=(8,), seed=99).state_dict())
    model.train()
    model.net[0].eval()
    return model


def _snapshot(model):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()],
            [id(p) for p in model.parameters()])


def _assert_as_before(model, before):
    state, modes, ids = before
    now = model.state_dict()
    assert list(now) == list(state)
    for key, value in state.items():
        assert now[key].dtype == value.dtype and torch.equal(now[key], value), key  # bit-identical
    assert [m.training for m in model.modules()] == modes
    assert [id(p) for p in model.parameters()] == ids  # the same parameter objects (an optimizer still holds them)


@pytest.mark.parametrize("projector", ["identity", "factored"])
def test_the_callers_model_comes_back_as_it_was(problem, tmp_path, projector):
    """featurize loads every checkpoint into the model it is given; the caller gets its own
    weights and every module's train/eval mode back."""
    model = _with_own_weights(problem[0])
    before = _snapshot(model)
    _run(problem, tmp_path / "s", projector=make_projector("factored", dim=30, seed=1) if projector == "factored" else None)
    _assert_as_before(model, before)


def test_the_callers_model_comes_back_after_an_error_mid_way(problem, tmp_path):
    model, inputs, labels, _ = problem
    _with_own_weights(model)
    before = _snapshot(model)
    crashing = FailingDataset(dataset(inputs, labels), fail_after=N + 21)  # dies in chunk 1 of checkpoint 1
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(problem, tmp_path / "s", data=crashing)
    _assert_as_before(model, before)
    bad = inputs.clone()
    bad[20, 3] = float("nan")
    with pytest.raises(DataError):
        _run(problem, tmp_path / "nan", data=dataset(bad, labels))
    _assert_as_before(model, before)


def test_resume_after_a_crash_gives_identical_features(problem, tmp_path):
    model, inputs, labels, _ = problem
    full = _run(problem, tmp_path / "a")
    crashing = FailingDataset(dataset(inputs, labels), fail_after=N + 21)  # dies in chunk 1 of checkpoint 1
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(problem, tmp_path / "b", data=crashing)
    partial = FeatureStore.open(tmp_path / "b")
    assert partial.missing_chunks("train", 0) == []
    assert [i for i, _, _ in partial.missing_chunks("train", 1)] == [1, 2]
    resumed = FailingDataset(dataset(inputs, labels), fail_after=10**9)
    _run(problem, tmp_path / "b", data=resumed)
    assert resumed.reads == N - 16  # only the missing chunks were computed
    store = FeatureStore.open(tmp_path / "b")
    assert store.is_complete("train")
    store.verify()
    for c in range(2):
        assert np.array_equal(store.features("train", c), full.features("train", c))
        assert np.array_equal(store.out_to_loss("train", c), full.out_to_loss("train", c))


def test_nan_input_is_a_data_error_and_commits_nothing_for_its_chunk(problem, tmp_path):
    model, inputs, labels, _ = problem
    bad = inputs.clone()
    bad[20, 3] = float("nan")
    with pytest.raises(DataError, match=r"\[20\]"):
        _run(problem, tmp_path / "s", data=dataset(bad, labels))
    store = FeatureStore.open(tmp_path / "s")
    assert store.done_mask("train", 0).tolist() == [True] * 16 + [False] * (N - 16)
    assert not store.done_mask("train", 1).any()
    assert sorted(f.name for f in (tmp_path / "s").rglob("*.npy")) == ["features_000000.npy", "out_to_loss_000000.npy"]
    assert not list((tmp_path / "s").rglob("*.tmp"))
    # the lock was released: fixing the data resumes
    _run(problem, tmp_path / "s")
    assert FeatureStore.open(tmp_path / "s").is_complete("train")


def test_featurize_on_a_complete_store_does_no_work(problem, tmp_path):
    _run(problem, tmp_path / "s")
    manifest = tmp_path / "s" / "manifest.json"
    before, stamp = manifest.read_bytes(), manifest.stat().st_mtime_ns
    store = _run(problem, tmp_path / "s", data=ForbiddenDataset(N))
    assert store.is_complete("train")
    assert manifest.read_bytes() == before and manifest.stat().st_mtime_ns == stamp


def test_a_second_split_shares_the_store(problem, tmp_path):
    model, inputs, labels, _ = problem
    _run(problem, tmp_path / "s")
    store = _run(problem, tmp_path / "s", data=dataset(inputs[:7], labels[:7]), split="test")
    assert store.splits == ["test", "train"]
    # same examples, same model and projection; only the batch differs (7 vs all), and BLAS may
    # sum a batch of another size in another order: equal to float64 rounding, not bitwise
    np.testing.assert_allclose(store.features("test", 1), store.features("train", 1)[:7], rtol=1e-12, atol=1e-15)


def test_featurize_with_other_settings_is_refused(problem, tmp_path):
    _run(problem, tmp_path / "s")
    with pytest.raises(StoreMismatchError, match="dtype"):
        _run(problem, tmp_path / "s", dtype="float32")
    with pytest.raises(StoreMismatchError, match="chunk_size"):
        _run(problem, tmp_path / "s", chunk_size=8)
    store = _run(problem, tmp_path / "s", chunk_size=8, overwrite=True)
    assert store.chunk_size == 8 and store.is_complete("train")


class TwoPassTask(ClassificationTask, key="test-featurize-two-pass"):
    """The Task default ``measure``: f with gradients, then Q in a second, gradient-free forward."""

    measure = Task.measure


@pytest.mark.parametrize("projector", ["factored", "identity"])
def test_out_to_loss_from_one_forward_equals_a_separate_pass(problem, tmp_path, projector):
    """ClassificationTask takes f and Q from one forward; the default measure's second (no-grad)
    forward must not reach the factored featurizer's hooks: features and Q are the same."""
    model, inputs, labels, checkpoints = problem

    def run(task, folder):
        return featurize(model, task, dataset(inputs, labels), checkpoints, tmp_path / folder,
                         make_projector(projector, dim=30, seed=1) if projector == "factored" else make_projector("identity"),
                         dtype="float64", chunk_size=16, batch_size=5, progress=False)
    one, two = run(ClassificationTask(), "one"), run(TwoPassTask(), "two")
    reference = mlp(d=6, n_classes=3, hidden=(8,), seed=99)
    for c, path in enumerate(checkpoints):
        load_checkpoint(reference, path)
        with torch.no_grad():
            p_y = torch.softmax(reference(inputs), dim=-1)[torch.arange(N), labels].numpy()
        np.testing.assert_allclose(one.out_to_loss("train", c), 1 - p_y, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(two.out_to_loss("train", c), one.out_to_loss("train", c), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(two.features("train", c), one.features("train", c), rtol=1e-12, atol=1e-14)


def test_a_failed_chunk_write_stops_the_run_and_a_rerun_completes_it(problem, tmp_path, monkeypatch):
    """Chunks are written by a writer thread; its error reaches the caller, the chunks before
    it stay committed, nothing is half-written, and a rerun computes only what is missing."""
    full = _run(problem, tmp_path / "full")
    original, calls = FeatureStore.write_chunk, []

    def failing(self, split, checkpoint, index, features, out_to_loss):
        calls.append((checkpoint, index))
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return original(self, split, checkpoint, index, features, out_to_loss)
    monkeypatch.setattr(FeatureStore, "write_chunk", failing)
    with pytest.raises(OSError, match="disk full"):
        _run(problem, tmp_path / "s")
    monkeypatch.setattr(FeatureStore, "write_chunk", original)
    store = FeatureStore.open(tmp_path / "s")
    assert store.done_mask("train", 0).tolist() == [True] * 16 + [False] * (N - 16)
    assert not list((tmp_path / "s").rglob("*.tmp"))
    store = _run(problem, tmp_path / "s")
    store.verify()
    for c in range(2):
        assert np.array_equal(store.features("train", c), full.features("train", c))
