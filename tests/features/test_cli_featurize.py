"""`attributor featurize` with the factored projection, sharded, merged, then scored by TRAK."""

from __future__ import annotations

import json

import numpy as np
import yaml

from attributor.cli import main
from zoo import TINY_RUN

TINY = TINY_RUN


def _cli(capsys, *args):
    code = main([*map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_factored_featurize_shards_merge_and_trak_scores(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    code, stdout, err = _cli(capsys, "featurize", "-c", config, "-o", out, "-q", "--set", "featurize.projection=factored")
    assert code == 0, err
    manifest = json.loads((out / "store" / "manifest.json").read_text())
    projector = manifest["settings"]["projector"]
    assert projector["kind"] == "factored" and [layer["shape"] for layer in projector["layers"]] == [[32, 65], [10, 33]]
    assert f"k={manifest['settings']['dim']}" in stdout and manifest["settings"]["dim"] <= 64

    code, stdout, err = _cli(capsys, "score", "-o", out, "-q")
    assert code == 0, err
    scores = np.load(out / "scores" / "scores.npy")
    assert scores.shape == (manifest["splits"]["test"]["n"], 240) and np.isfinite(scores).all()
    assert json.loads((out / "metadata.json").read_text())["store"]["projector"]["kind"] == "factored"

    for i in range(2):
        code, stdout, err = _cli(capsys, "featurize", "-o", out, "-q", "--shard", f"{i}/2")
        assert code == 0, err
        assert f"store-shard-{i}-of-2" in stdout
    code, stdout, err = _cli(capsys, "store", "merge", out / "store-shard-0-of-2", out / "store-shard-1-of-2",
                             "--out", tmp_path / "merged")
    assert code == 0, err
    merged = json.loads((tmp_path / "merged" / "manifest.json").read_text())
    assert merged["settings"] == manifest["settings"] and merged["splits"] == manifest["splits"]

    code, _, err = _cli(capsys, "featurize", "-o", out, "--shard", "2/2")
    assert code == 2 and "--shard" in err
    code, _, err = _cli(capsys, "store", "merge", out / "store-shard-0-of-2", "--out", tmp_path / "partial")
    assert code == 2 and "in no source" in err


def test_projection_choices_in_the_config():
    from attributor.config import load_config
    from attributor.errors import ConfigError

    assert load_config(None, ["featurize.projection=dense"]).featurize.projection == "gaussian"
    for kind in ("factored", "sparse", "gaussian", "rademacher", "identity"):
        assert load_config(None, [f"featurize.projection={kind}"]).featurize.projection == kind
    try:
        load_config(None, ["featurize.projection=kronecker"])
    except ConfigError as err:
        assert "featurize.projection" in str(err)
    else:
        raise AssertionError("an unknown projection was accepted")
