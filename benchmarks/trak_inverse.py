"""TRAK's damped after-kernel inverse: the explicit inverse (before) against the factor (now).

For k in {512, 1603, 4096}, with 1 and 2 torch threads, with the machine's other core
idle and with it busy (a pure-Python busy-loop subprocess), times

  * ``old``: the routine TRAK used until 2026-12: Cholesky, then ``cholesky_inverse`` (the
    explicit k x k inverse), then ``queries @ inverse``;
  * ``new``: ``attributor.methods.trak._factorize`` as TRAK calls it (Cholesky factor only,
    the factorisation on one thread below ``PARALLEL_FACTOR_MIN_DIM``), then
    ``factor.solve(queries)`` (two triangular solves);
  * ``new-uncapped``: the same with the caller's thread count for the factorisation (only
    where that differs from ``new``), the measurement behind the thread rule;

``fit_s`` is the factorisation/inverse (median of ``--reps``, fewer once a row has spent
4 s; ``fit_s_max`` the slowest), ``apply_s`` the query side for 1,024 queries (median). Accuracy, per row: ``rel_residual`` = ||A X - B||_F /
(||A||_F ||X||_F) of the query solve X (A = K + lambda I, B = the queries transposed:
backward error, needs no reference) and ``score_rel_err`` = max |S - S_ref| / max |S_ref|
of the scores S = queries A^{-1} Phi^T for 256 training rows against a float64 reference
(numpy's LU ``solve``; in the undamped case the exact answer, see ``make_problem``).
``others_cores``: CPU cores that other processes (not this one, not its busy loop) used
while the row ran, from /proc/stat: the machine is shared, and "idle" is only what this
benchmark does to it.

Cases: ``damped``: n = 2k training rows of projected features with a decaying spectrum
(latent singular values 1/j, mixed by a Gaussian k x k projection), damping 1e-2 (TRAK's
default); ``undamped-singular`` (k <= 1603 only): n = k - 1 rows, damping 0, so the kernel
is singular and the pseudo-inverse is asked for; queries are combinations of training rows.

    python benchmarks/trak_inverse.py --out runs/bench-trak-inverse

writes trak_inverse.csv and trak_inverse.json there and prints a Markdown table; the
recorded table is in benchmarks/RESULTS.md. About 3 minutes on the 2-core machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from attributor.methods.trak import PARALLEL_FACTOR_MIN_DIM, _CholeskyFactor, _factorize

DIMS = (512, 1603, 4096)
N_QUERIES, N_SCORED = 1024, 256
DAMPING = 1e-2


def old_inverse(kernel: torch.Tensor, damping: float) -> tuple[torch.Tensor, str]:
    """TRAK's ``_damped_inverse`` before 2026-12, verbatim but for the returned path name."""
    k = kernel.shape[0]
    lam = damping * float(torch.trace(kernel)) / k
    damped = kernel + lam * torch.eye(k, dtype=kernel.dtype)
    factor, info = torch.linalg.cholesky_ex(damped)
    if int(info) == 0:
        return torch.cholesky_inverse(factor), "cholesky"
    eigenvalues, eigenvectors = torch.linalg.eigh(damped)
    cutoff = eigenvalues.abs().max() * k * torch.finfo(kernel.dtype).eps
    inverted = torch.where(eigenvalues > cutoff, 1.0 / eigenvalues, torch.zeros_like(eigenvalues))
    return (eigenvectors * inverted) @ eigenvectors.T, "eigh"


def make_problem(case: str, k: int, seed: int = 0) -> dict:
    """Training features Phi (n, k), queries (N_QUERIES, k), the kernel and the reference scores."""
    g = torch.Generator().manual_seed(seed)
    if case == "damped":
        n = 2 * k
        latent = torch.randn(n, k, generator=g, dtype=torch.float64) / torch.arange(1, k + 1, dtype=torch.float64)
        mixing = torch.randn(k, k, generator=g, dtype=torch.float64) / k**0.5
        phi = latent @ mixing
        latent_q = torch.randn(N_QUERIES, k, generator=g, dtype=torch.float64) / torch.arange(1, k + 1, dtype=torch.float64)
        queries = latent_q @ mixing
        damping = DAMPING
    else:
        n = k - 1
        phi = torch.randn(n, k, generator=g, dtype=torch.float64)
        mix = torch.randn(N_QUERIES, n, generator=g, dtype=torch.float64) / n**0.5
        queries = mix @ phi  # in the row space of Phi
        damping = 0.0
    kernel = phi.T @ phi
    a = kernel.numpy().copy()
    a[np.diag_indices(k)] += damping * np.trace(a) / k
    scored = phi[:N_SCORED].numpy()
    if damping > 0:
        reference = np.linalg.solve(a, queries.numpy().T).T @ scored.T
    else:  # Phi has full row rank n, so Phi K^+ Phi^T = Phi pinv(Phi) = I and the scores are mix
        reference = mix[:, :N_SCORED].numpy()
    return {"case": case, "k": k, "n": n, "damping": damping, "kernel": kernel, "damped": torch.from_numpy(a),
            "queries": queries, "scored": torch.from_numpy(scored), "reference": reference}


def timed(function, reps: int, budget_s: float = 4.0) -> tuple[list[float], object]:
    """Up to ``reps`` timings of ``function()``; no further repetition once ``budget_s`` is spent."""
    seconds, result = [], None
    for _ in range(reps):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
        if sum(seconds) > budget_s:
            break
    return seconds, result


def measure(problem: dict, routine: str, reps: int) -> dict:
    kernel, damping, queries = problem["kernel"], problem["damping"], problem["queries"]
    if routine == "old":
        fit_times, (inverse, path) = timed(lambda: old_inverse(kernel, damping), reps)
        apply_times, left = timed(lambda: queries @ inverse, reps)
    else:
        threads = torch.get_num_threads() if routine == "new-uncapped" else None
        fit_times, factor = timed(lambda: _factorize(kernel, damping, threads=threads), reps)
        path = "cholesky" if isinstance(factor, _CholeskyFactor) else "eigh"
        apply_times, left = timed(lambda: factor.solve(queries), reps)
    a = problem["damped"]
    residual = torch.linalg.norm(a @ left.T - queries.T) / (torch.linalg.norm(a) * torch.linalg.norm(left))
    scores = (left @ problem["scored"].T).numpy()
    reference = problem["reference"]
    return {"path": path, "fit_s": round(statistics.median(fit_times), 4), "fit_s_max": round(max(fit_times), 4),
            "apply_s": round(statistics.median(apply_times), 4),
            "rel_residual": float(f"{float(residual):.2e}"),
            "score_rel_err": float(f"{np.abs(scores - reference).max() / np.abs(reference).max():.2e}")}


def cpu_snapshot(busy: subprocess.Popen | None) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of the whole machine, CPU seconds of this process and its busy loop)."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    machine = (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # all but idle and iowait
    mine = time.process_time()
    if busy is not None:
        stat = Path(f"/proc/{busy.pid}/stat").read_text().rsplit(")", 1)[1].split()
        mine += (int(stat[11]) + int(stat[12])) / ticks  # utime, stime
    return time.perf_counter(), machine, mine


def others_cores(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """Cores used by other processes (other engineers' jobs) between two snapshots."""
    wall = after[0] - before[0]
    return max(0.0, ((after[1] - before[1]) - (after[2] - before[2])) / wall) if wall > 0 else 0.0


def start_busy_loop() -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(1.0)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (trak_inverse.csv, trak_inverse.json)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per timing (the median is reported)")
    parser.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    args = parser.parse_args()
    started = time.perf_counter()
    problems = [make_problem("damped", k) for k in args.dims]
    problems += [make_problem("undamped-singular", k) for k in args.dims if k <= 1603]
    caller_threads = torch.get_num_threads()
    rows = []
    for load in ("idle", "busy"):
        busy = start_busy_loop() if load == "busy" else None
        try:
            for problem in problems:
                for threads in (1, 2):
                    torch.set_num_threads(threads)
                    routines = ["old", "new"]
                    if threads > 1 and problem["k"] < PARALLEL_FACTOR_MIN_DIM:
                        routines.append("new-uncapped")
                    for routine in routines:
                        before = cpu_snapshot(busy)
                        result = measure(problem, routine, args.reps)
                        row = {"case": problem["case"], "k": problem["k"], "n": problem["n"], "load": load,
                               "threads": threads, "routine": routine, **result,
                               "others_cores": round(others_cores(before, cpu_snapshot(busy)), 2)}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
        finally:
            torch.set_num_threads(caller_threads)
            if busy is not None:
                busy.kill()
                busy.wait()
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "trak_inverse.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {"torch": torch.__version__, "cpu_count": os.cpu_count(), "reps": args.reps, "n_queries": N_QUERIES,
            "n_scored": N_SCORED, "damping": DAMPING, "parallel_factor_min_dim": PARALLEL_FACTOR_MIN_DIM,
            "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    (args.out / "trak_inverse.json").write_text(json.dumps(meta, indent=2))
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    print(f"total {meta['seconds']} s")


if __name__ == "__main__":
    main()
