"""The influence functions over several checkpoints (``checkpoint="all"`` or a list): the
mean of one fitted member per checkpoint, for scores, self-influence and groups."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from attributor.errors import ConfigError
from attributor.methods import TrainingContext, get_method
from attributor.tasks import ClassificationTask


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> TrainingContext:
    x, y = zoo.classification_data(60, seed=5)
    checkpoints = zoo.train_and_save(zoo.mlp(), x[:45], y[:45], tmp_path_factory.mktemp("ens"), n_checkpoints=3, steps=30)
    datasets = {"train": zoo.dataset(x[:45], y[:45]), "test": zoo.dataset(x[45:], y[45:])}
    return TrainingContext(model=zoo.mlp(), task=ClassificationTask(), datasets=datasets, checkpoints=checkpoints)


@pytest.mark.parametrize("name, args", [("if-explicit", {}), ("if-lissa", {"depth": 40}), ("datainf", {})])
def test_all_checkpoints_is_the_mean_of_the_members(context, name, args):
    members = [get_method(name, checkpoint=c, **args).fit(None, "train", context) for c in range(3)]
    ensemble = get_method(name, checkpoint="all", **args).fit(None, "train", context)
    assert ensemble.checkpoint_ == [0, 1, 2]
    scores = ensemble.score("test", dense=True)
    expected = np.mean([m.score("test", dense=True).values for m in members], axis=0)
    np.testing.assert_allclose(scores.values, expected, rtol=1e-10, atol=1e-14)
    assert scores.meta["checkpoint"] == "all"
    np.testing.assert_allclose(ensemble.self_influence(), np.mean([m.self_influence() for m in members], axis=0), rtol=1e-10)
    groups = np.arange(45) % 4
    np.testing.assert_allclose(ensemble.score_groups("test", groups),
                               np.mean([m.score_groups("test", groups) for m in members], axis=0), rtol=1e-10, atol=1e-14)
    # the members differ, so the ensemble is not one checkpoint's answer
    assert not np.allclose(members[0].score("test", dense=True).values, members[2].score("test", dense=True).values)


def test_explicit_ensemble_with_damping_equals_a_fit_at_that_damping(context):
    ensemble = get_method("if-explicit", checkpoint="all", damping=10.0).fit(None, "train", context)
    fresh = get_method("if-explicit", checkpoint="all", damping=0.1).fit(None, "train", context)
    np.testing.assert_allclose(ensemble.with_damping(0.1).score("test", dense=True).values,
                               fresh.score("test", dense=True).values, rtol=1e-10, atol=1e-14)


def test_a_list_of_checkpoints_and_bad_lists(context):
    two = get_method("if-explicit", checkpoint=[0, -1]).fit(None, "train", context)
    assert two.checkpoint_ == [0, 2]
    for bad in ([], [0, 0], [0, 7], "last"):
        with pytest.raises(ConfigError, match="checkpoint"):
            get_method("if-explicit", checkpoint=bad).fit(None, "train", context)


def test_if_cg_members_report_their_convergence(context):
    import warnings

    cg = get_method("if-cg", checkpoint="all", max_iter=2, damping=1e-3).fit(None, "train", context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        meta = cg.score("test").meta
    assert {f"checkpoint {c}: unconverged" for c in range(3)} <= set(meta)


def test_score_checkpoints_of_a_config_reach_the_influence_functions():
    """``score.checkpoints`` used to be dropped silently for the influence functions (they
    take ``checkpoint``): a list now becomes the ensemble, one entry the index, and an
    explicit method_args value wins."""
    from attributor.pipelines.run import build_method

    assert build_method("if-lissa", {}, damping=0.01, checkpoints=[1, 3]).checkpoint == [1, 3]
    assert build_method("if-explicit", {}, damping=0.01, checkpoints=[2]).checkpoint == 2
    assert build_method("if-explicit", {}, damping=0.01, checkpoints=None).checkpoint == -1
    assert build_method("if-explicit", {"checkpoint": "all"}, damping=0.01, checkpoints=[2]).checkpoint == "all"
    assert build_method("trak", {}, damping=0.01, checkpoints=[0, 1]).checkpoints == [0, 1]
