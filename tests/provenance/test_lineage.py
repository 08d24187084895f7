"""Lineage: a calibration fitted on one zoo and applied to another, parents and merges,
the direction rules, refused calibrations, the written files and 80-column console output.

The zoos here are synthetic similarity matrices with known parents (cosine similarity of
noisy copies of random base vectors, squeezed into the 0.85-1.0 band), so every expected
answer is known and the tests run in milliseconds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from attributor.errors import DataError
from attributor.provenance.analysis import ModelInfo, SimilarityResults
from attributor.provenance.calibration import Calibration, best_cut, calibrate, isotonic_map, load_calibration
from attributor.provenance.lineage import evaluate_lineage, infer_lineage, run_lineage

TYPES = {"Chat": 0.25, "Fine-tuned": 0.3, "Quantized": 0.05, "Pruned": 0.3}


def synthetic_zoo(n_families: int, seed: int, *, merge: bool = True, long_names: bool = False):
    """(results, model infos): families of a Base and four derivatives, and a merge of families 0 and 1."""
    rng = np.random.default_rng(seed)
    infos, vectors = [], []
    for f in range(n_families):
        base_id = f"fam{f}-base" + ("-with-a-very-long-model-identifier" if long_names else "")
        base = rng.normal(size=48)
        infos.append(ModelInfo(base_id, f"fam{f}", "Base", f"Family {f} (Base)"))
        vectors.append(base)
        for kind, noise in TYPES.items():
            infos.append(ModelInfo(f"{base_id}-{kind.lower()}", f"fam{f}", kind, f"Family {f} ({kind})",
                                   base=base_id, parents=(base_id,)))
            vectors.append(base + noise * rng.normal(size=48))
    if merge:
        a, b = vectors[0], vectors[len(TYPES) + 1]
        infos.append(ModelInfo("merge-0-1", "merge", "Merge", "Merge of 0 and 1",
                               parents=(infos[0].model_id, infos[len(TYPES) + 1].model_id)))
        vectors.append((a + b) / 2 + 0.05 * rng.normal(size=48))
    v = np.array(vectors)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    matrix = 0.85 + 0.15 * (v @ v.T)
    return SimilarityResults(tuple(i.model_id for i in infos), {"demo": {"cosine": matrix}}), infos


@pytest.fixture(scope="module")
def fitted() -> Calibration:
    results, infos = synthetic_zoo(6, seed=1)
    return calibrate(results, infos)


@pytest.fixture(scope="module")
def answer(fitted):
    results, infos = synthetic_zoo(5, seed=2)
    return infer_lineage(results, fitted, infos=infos)


def calls(lineage) -> dict[str, list[str]]:
    return {m.model_id: [p["model_id"] for p in m.parents] for m in lineage.models}


# -- calibration ----------------------------------------------------------------------------------
def test_isotonic_map_is_monotone_and_crosses_one_half_at_the_threshold():
    rng = np.random.default_rng(0)
    positive, negative = rng.normal(0.95, 0.02, 40), rng.normal(0.88, 0.02, 300)
    t, balanced = best_cut(positive, negative)
    assert 0.88 < t < 0.95 and balanced > 0.9
    # no other cut does better
    cuts = np.linspace(0.8, 1.0, 2001)
    assert all(((positive >= c).mean() + (negative < c).mean()) / 2 <= balanced + 1e-12 for c in cuts)
    knots = isotonic_map(positive, negative, t)
    xs, ps = np.array(knots).T
    assert (np.diff(xs) >= 0).all() and (np.diff(ps) >= 0).all() and 0 < ps.min() and ps.max() < 1
    grid = np.linspace(0.8, 1.0, 401)
    p = np.interp(grid, xs, ps)
    assert ((p >= 0.5) == (grid >= t)).all()  # an edge exactly from the threshold on


def test_a_few_edges_below_every_unrelated_pair_do_not_call_everything_derived():
    """Distilled students under an output fingerprint: three edges less similar than any unrelated pair."""
    rng = np.random.default_rng(1)
    positive = np.concatenate([rng.normal(0.97, 0.01, 38), [0.55, 0.58, 0.6]])
    negative = rng.normal(0.85, 0.03, 600)
    t, balanced = best_cut(positive, negative)
    assert 0.9 < t < 0.96 and balanced > 0.9
    xs, ps = np.array(isotonic_map(positive, negative, t)).T
    assert np.interp(0.56, xs, ps) < 0.5 and np.interp(0.85, xs, ps) < 0.5 and np.interp(0.97, xs, ps) > 0.9


def test_calibration_separates_edges_from_unrelated_and_round_trips(fitted, tmp_path):
    c = fitted.methods["demo"]
    assert c.metric == "cosine" and c.n_edges == 6 * 4 + 2 and c.n_unrelated > 100
    assert c.balanced_accuracy > 0.95 and c.auc > 0.99
    assert c.probability(0.999) > 0.9 and c.probability(0.86) < 0.1
    path = fitted.save(tmp_path / "calibration.json")
    again = load_calibration(path)
    assert again.methods["demo"] == c


def test_calibration_fitted_on_one_zoo_finds_the_parents_of_another(answer):
    got = calls(answer)
    for model in answer.infos:
        if model.model_type == "Base":
            assert got[model.model_id] == [], model.model_id  # a Base gets no parent
        elif model.model_type != "Merge":
            assert got[model.model_id] == [model.base], model.model_id
    e = answer.evaluation
    assert e["parent_top1"] == 1.0 and e["parent_exact"] == 1.0 and e["root_accuracy"] == 1.0
    assert e["edge_precision"] == 1.0 and e["edge_recall"] == 1.0


def test_a_merge_gets_both_parents(answer):
    merge = next(m for m in answer.models if m.model_id == "merge-0-1")
    assert sorted(p["model_id"] for p in merge.parents) == ["fam0-base", "fam1-base"]
    assert merge.derived and merge.reason.startswith("merge")
    assert all(p["probability"] >= 0.5 for p in merge.parents)
    assert answer.evaluation["n_merges"] == 1 and answer.evaluation["merges_exact"] == 1.0


def test_a_base_without_types_is_found_as_the_centre_of_its_family(fitted):
    results, infos = synthetic_zoo(4, seed=3, merge=False)
    lineage = infer_lineage(results, fitted, infos=infos, direction="centrality")
    got = calls(lineage)
    # quantized copies are almost the base itself: the rule may take either as the root, so
    # check the three derivatives that moved away from the base
    for model in infos:
        if model.model_type in ("Chat", "Fine-tuned", "Pruned"):
            assert got[model.model_id] in ([model.base], [f"{model.base}-quantized"]), model.model_id
    roots = [m for m in lineage.models if not m.parents]
    assert len(roots) == 4  # one root per family


def test_an_unrelated_model_is_not_called_derived(fitted):
    results, infos = synthetic_zoo(3, seed=4, merge=False)
    rng = np.random.default_rng(9)
    n = len(infos) + 1
    matrix = np.full((n, n), 0.0)
    matrix[:-1, :-1] = results.matrix("demo", "cosine")
    matrix[-1, :-1] = matrix[:-1, -1] = 0.85 + 0.15 * rng.uniform(-0.2, 0.2, n - 1)
    matrix[-1, -1] = 1.0
    stranger = ModelInfo("stranger", "other", "Fine-tuned", "Stranger")
    lineage = infer_lineage(SimilarityResults((*results.models, "stranger"), {"demo": {"cosine": matrix}}),
                            fitted, infos=[*infos, stranger])
    answer = next(m for m in lineage.models if m.model_id == "stranger")
    assert not answer.derived and answer.parents == () and answer.probability < 0.5


def test_the_calibration_matrix_itself_is_refused(fitted):
    results, infos = synthetic_zoo(6, seed=1)
    with pytest.raises(DataError, match="fitted on this very similarity matrix"):
        infer_lineage(results, fitted, infos=infos)


def test_evaluation_counts_wrong_calls():
    results, infos = synthetic_zoo(2, seed=5, merge=False)
    cal = calibrate(*synthetic_zoo(3, seed=6, merge=False))
    lineage = infer_lineage(results, cal, infos=infos)
    wrong = [ModelInfo(i.model_id, i.family, i.model_type, i.display_name,
                       parents=("fam1-base",) if i.model_id == "fam0-base-chat" else i.parents) for i in infos]
    e = evaluate_lineage(lineage, wrong)
    assert e["parent_top1"] == pytest.approx(7 / 8) and e["edge_precision"] == pytest.approx(7 / 8)


# -- the command ----------------------------------------------------------------------------------
def write_zoo(folder: Path, n_families: int, seed: int, **kw) -> tuple[Path, Path]:
    results, infos = synthetic_zoo(n_families, seed, **kw)
    folder.mkdir(parents=True, exist_ok=True)
    matrix = results.matrix("demo", "cosine")
    (folder / "similarity_matrices.json").write_text(json.dumps(
        {"models": list(results.models), "results": {"demo": {"cosine": matrix.tolist()}}}))
    (folder / "model_info.json").write_text(json.dumps([i.to_dict() for i in infos]))
    return folder / "similarity_matrices.json", folder / "model_info.json"


@pytest.fixture()
def two_zoos(tmp_path):
    cal = write_zoo(tmp_path / "cal", 6, seed=1)
    evaluated = write_zoo(tmp_path / "eval", 14, seed=2, long_names=True)
    return cal, evaluated


def test_cli_calibrates_on_one_zoo_and_answers_for_another(two_zoos, tmp_path, capsys, monkeypatch):
    from attributor.cli import main

    (cal_results, cal_info), (results, info) = two_zoos
    calibration = tmp_path / "calibration.json"
    assert main(["provenance", "calibrate", "--results-file", str(cal_results), "--model-info", str(cal_info),
                 "--out", str(calibration)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "lineage"
    assert main(["provenance", "lineage", "--calibration", str(calibration), "--results-file", str(results),
                 "--model-info", str(info), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["lineage.csv", "lineage.html", "lineage.json"]
    lines = stdout.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in stdout  # folded, never cut
    assert "parents: top-1 1.000" in stdout
    # every long model id is printed whole (folded over lines, so compare without the line breaks)
    flat = "".join(line.strip() for line in lines)
    data = json.loads((out / "lineage.json").read_text())
    for m in data["models"]:
        assert m["model_id"].replace(" ", "") in flat.replace(" ", "")
    merge = next(m for m in data["models"] if m["model_id"] == "merge-0-1")
    assert len(merge["parents"]) == 2 and data["evaluation"]["parent_exact"] == 1.0
    rows = list(csv.DictReader((out / "lineage.csv").open()))
    assert len(rows) == len(data["models"])
    row = next(r for r in rows if r["model_id"] == "merge-0-1")
    assert row["derived"] == "yes" and row["parent_1"] and row["parent_2"]


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    (json.dumps({"schema": "something else"}), "is not a calibration"),
    (json.dumps({"schema": "attributor.provenance.calibration/1", "methods": {"demo": {"metric": "cosine"}}}),
     "malformed"),
])
def test_lineage_refuses_a_missing_or_corrupt_calibration(two_zoos, tmp_path, capsys, content, message):
    from attributor.cli import main

    _, (results, info) = two_zoos
    calibration = tmp_path / "calibration.json"
    if content is not None:
        calibration.write_text(content)
    out = tmp_path / "lineage"
    assert main(["provenance", "lineage", "--calibration", str(calibration), "--results-file", str(results),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: calibration file") and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_knots_that_are_not_monotone_are_refused(fitted, tmp_path):
    data = fitted.to_dict()
    data["methods"]["demo"]["knots"] = [[0.9, 0.8], [0.95, 0.2]]
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="non-decreasing"):
        load_calibration(tmp_path / "c.json")


def test_a_zoo_folder_reuses_the_matrices_already_there(two_zoos, tmp_path, monkeypatch, fitted):
    """``--zoo``: similarity_matrices.json in the output folder with every method for the zoo's models is reused."""
    import attributor.provenance.experiment as experiment

    _, (results, info) = two_zoos
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    entries = json.loads(info.read_text())
    (zoo / "model_info.json").write_text(json.dumps([{**e, "path": f"models/{e['model_id']}"} for e in entries]))
    out = tmp_path / "out"
    out.mkdir()
    (out / "similarity_matrices.json").write_text(results.read_text())
    fitted.save(tmp_path / "calibration.json")

    def no_fingerprints(*args, **kwargs):
        raise AssertionError("the zoo was fingerprinted again")

    monkeypatch.setattr(experiment, "run_experiment", no_fingerprints)
    lineage = run_lineage(tmp_path / "calibration.json", out, zoo=zoo, console=False, progress=False)
    assert lineage.evaluation["parent_top1"] == 1.0


def test_a_fine_tune_that_barely_passes_with_an_unrelated_base_is_not_a_merge():
    """C is A's fine-tune and just passes the threshold with B; M is halfway between A and B."""
    from attributor.provenance.calibration import MethodCalibration
    from attributor.provenance.lineage import merge_weight

    ids = ("A", "B", "C", "M")
    matrix = np.array([[1.0, 0.86, 0.995, 0.95],
                       [0.86, 1.0, 0.905, 0.94],
                       [0.995, 0.905, 1.0, 0.945],
                       [0.95, 0.94, 0.945, 1.0]])
    cal = Calibration({"demo": MethodCalibration("demo", "cosine", 0.9, ((0.85, 0.1), (0.95, 0.9)), 10, 100, 0.9, 0.9,
                                                 "fitted elsewhere")})
    infos = [ModelInfo("A", "a", "Base", "A"), ModelInfo("B", "b", "Base", "B"),
             ModelInfo("C", "a", "Fine-tuned", "C"), ModelInfo("M", "m", "Merge", "M")]
    got = calls(infer_lineage(SimilarityResults(ids, {"demo": {"cosine": matrix}}), cal, infos=infos))
    assert got == {"A": [], "B": [], "C": ["A"], "M": ["A", "B"]}
    assert merge_weight(0.995, 0.905, 0.86) < 0.25 < merge_weight(0.95, 0.94, 0.86)
    # without the position rule C would get B as a second parent
    loose = calls(infer_lineage(SimilarityResults(ids, {"demo": {"cosine": matrix}}), cal, infos=infos,
                                min_merge_weight=0.0))
    assert loose["C"] == ["A", "B"]


def test_calibrating_on_a_zoo_without_parents_is_refused(two_zoos, tmp_path, capsys):
    from attributor.cli import main

    (results, info), _ = two_zoos
    entries = [{k: v for k, v in e.items() if k not in ("base", "parents")} for e in json.loads(info.read_text())]
    (tmp_path / "no-parents.json").write_text(json.dumps(entries))
    out = tmp_path / "calibration.json"
    assert main(["provenance", "calibrate", "--results-file", str(results), "--model-info",
                 str(tmp_path / "no-parents.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a model and its parent (0)" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
