"""Is the TRAK vs traker gap on mnist1d in the projection? Both projectors, one TRAK formula.

Featurizes the full-suite mnist1d MLP (3 checkpoints) with the identity projection (exact
per-example gradients of the margin), then projects those same gradients to k=1024 with
our gaussian projector and with traker's BasicProjector (normal), and computes TRAK from
each with one float64 formula (relative damping 1e-2 per checkpoint, Q averaged), and, for
traker's projector, also traker's float32 inverse, and traker's own weighting of the
checkpoints (its inverse divided by its mean absolute entry) with its single ridge. LDS against the bench's retrains. Last,
our TRAK and traker's own pipeline with no projection at all (traker's NoOpProjector).

    python benchmarks/trak_projection_check.py --bench runs/bench

needs an earlier `attributor bench --suite full --out runs/bench` (its retrain cache and
trained checkpoints); rewrites that run's mnist1d feature store with identity features.
The recorded output is in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from attributor.evaluation.lds import lds
from attributor.evaluation.retrain import random_subsets, retrain
from attributor.features import make_projector
from attributor.pipelines import bench
from attributor.pipelines.bench_tasks import SUITES


def trak(project, grads, queries, out_to_loss, damping=1e-2, float32=False, traker_weights=False,
         shared_lambda=None) -> np.ndarray:
    """TRAK eq. (16) averaged over checkpoints. ``traker_weights``: divide each checkpoint's
    inverse by its mean absolute entry, as traker's BasicScoreComputer.get_x_xtx_inv does
    ("to avoid numerical issues"), which reweights the checkpoints of the ensemble."""
    total = 0.0
    for c, (g, h) in enumerate(zip(grads, queries)):
        x, z = project(g, c), project(h, c)
        if float32:  # as traker: kernel and inverse in float32
            kernel = x.T @ x
            lam = damping * float(torch.trace(kernel.double())) / kernel.shape[0]
            inverse = torch.linalg.inv(kernel + lam * torch.eye(kernel.shape[0]))
            total = total + (z @ (x @ inverse).T).double().numpy()
        else:
            x, z = x.double().numpy(), z.double().numpy()
            kernel = x.T @ x
            lam = damping * np.trace(kernel) / kernel.shape[0] if shared_lambda is None else shared_lambda
            inverse = np.linalg.inv(kernel + lam * np.eye(kernel.shape[0]))
            if traker_weights:
                inverse /= np.abs(inverse).mean()
            total = total + z @ inverse @ x.T
    return total / len(grads) * out_to_loss[None, :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("runs/bench"))
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    from trak.projectors import BasicProjector, ProjectionType

    suite = SUITES["full"]
    task = next(t for t in suite.tasks if t.name == "mnist1d-mlp")
    variant = bench._variant(task, "clean", args.bench, suite, False, "identity")
    store, data = variant.store, variant.prepared.data
    masks = random_subsets(len(data.y_train), suite.n_subsets, seed=task.seed)
    actual = retrain(task.recipe(data), masks, args.bench / "cache", progress=False)["measurement"]
    grads = [torch.tensor(np.asarray(store.features("train", c)), dtype=torch.float32) for c in range(store.n_checkpoints)]
    queries = [torch.tensor(np.asarray(store.features("query", c)), dtype=torch.float32) for c in range(store.n_checkpoints)]
    q = np.mean([np.asarray(store.out_to_loss("train", c)) for c in range(store.n_checkpoints)], axis=0)
    print("seed | ours (float64) | traker's projector (float64) | traker's projector (float32 inverse) "
          "| traker's projector, traker's lambda and checkpoint weights")
    for seed in range(args.seeds):
        ours = make_projector("gaussian", suite.proj_dim, seed=seed)
        theirs = BasicProjector(grad_dim=store.dim, proj_dim=suite.proj_dim, seed=seed, proj_type=ProjectionType.normal,
                                device="cpu", dtype=torch.float32)
        a = lds(trak(lambda g, c: ours.project(g, c), grads, queries, q), masks, actual)["lds"]
        b = lds(trak(lambda g, c: theirs.project(g, model_id=c), grads, queries, q), masks, actual)["lds"]
        d = lds(trak(lambda g, c: theirs.project(g, model_id=c) / store.dim ** 0.5, grads, queries, q, float32=True),
                masks, actual)["lds"]
        project = lambda g, c: theirs.project(g, model_id=c) / store.dim ** 0.5  # noqa: E731  (traker's scale)
        shared = 1e-2 * np.mean([float((project(g, c).double() ** 2).sum()) for c, g in enumerate(grads)]) / suite.proj_dim
        e = lds(trak(project, grads, queries, q, traker_weights=True, shared_lambda=shared), masks, actual)["lds"]
        print(f"{seed} | {a:.4f} | {b:.4f} | {d:.4f} | {e:.4f}", flush=True)
    # the unprojected comparison: our TRAK and traker's (NoOpProjector) on the same gradients
    from scipy.stats import spearmanr

    from attributor.evaluation.peers import run_peer
    from attributor.methods import get_method

    prepared = variant.prepared
    mine = get_method("trak").fit(store, "train").score("query", topk=1).values
    damping = bench.peer_damping("traker-trak", variant.prepared.task, variant, 1e-2) / store.dim  # NoOp features carry traker's 1/sqrt(p) scale
    peer = run_peer("traker-trak", prepared.model(), (torch.as_tensor(prepared.train_set.inputs), prepared.train_set.labels),
                    (torch.as_tensor(prepared.queries.inputs), prepared.queries.labels), prepared.checkpoints, proj_dim=None,
                    damping=damping, work_dir=args.bench / "identity-peer").scores
    rho = np.mean([spearmanr(x, y)[0] for x, y in zip(mine, peer)])
    print(f"identity: mean per-query Spearman ours vs traker {rho:.4f}; LDS ours {lds(mine, masks, actual)['lds']:.4f}, "
          f"traker {lds(peer, masks, actual)['lds']:.4f}")


if __name__ == "__main__":
    main()
