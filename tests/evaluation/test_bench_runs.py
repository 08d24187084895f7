"""The shared benchmark folder claim and the t-interval over seeds."""

from __future__ import annotations

import json

import pytest
from scipy import stats

from attributor.errors import ConfigError
from attributor.evaluation.runs import claim_run_dir, t_interval


def test_claim_reuses_refuses_and_clears(tmp_path):
    out = tmp_path / "run"
    assert claim_run_dir(out, {"a": 1}, "demo", overwrite=False) is False
    (out / "cache").mkdir()
    (out / "cache" / "x.json").write_text("{}")
    assert claim_run_dir(out, {"a": 1}, "demo", overwrite=False) is False and (out / "cache" / "x.json").exists()
    with pytest.raises(ConfigError, match="holds a demo run with other settings"):
        claim_run_dir(out, {"a": 2}, "demo", overwrite=False)
    assert claim_run_dir(out, {"a": 2}, "demo", overwrite=True, clear=["cache"]) is True
    assert not (out / "cache").exists() and json.loads((out / "config.json").read_text()) == {"a": 2}
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="is not a demo run"):
        claim_run_dir(tmp_path / "mine", {"a": 1}, "demo", overwrite=True)


def test_t_interval_matches_scipy_and_handles_small_samples():
    values = [0.61, 0.72, 0.65, 0.70, 0.58]
    mean, low, high = t_interval(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 5, scale=stats.sem(values))
    assert mean == pytest.approx(0.652) and (low, high) == pytest.approx(expected)
    assert t_interval([0.5]) == (0.5, 0.5, 0.5)
    assert t_interval([float("nan"), 0.4, 0.4]) == (0.4, 0.4, 0.4)
