"""Featurization speed: plain forward+backward against every featurizer, ours and the peers'.

    python benchmarks/featurize.py --out runs/bench-featurize

writes runs/bench-featurize/featurize.csv (columns model, n_params, featurizer, proj_dim,
examples_per_s, peak_mb, ratio_to_fwd_bwd) and prints it as a Markdown table. The recorded
table is in benchmarks/RESULTS.md.

    python benchmarks/featurize.py --stream 1000000 --out runs/bench-stream

is the memory check: ``featurize()`` with the factored projector streams N generated
mnist1d-sized examples (40 features, 10 classes, each generated from (seed, index) when
it is read: no N-row array exists) through an MLP 40-128-10 into a FeatureStore, and
writes DIR/stream.json with the wall time, examples/s and the peak RSS of the process.

Models (float32, eval mode, random inputs from fixed seeds, the same batches for every row):

* ``mlp``: MLP 784-1024-256-10 (1.07M parameters), classification margin, batch 128;
* ``cnn``: Conv(1->16) pool Conv(16->32) pool Linear(1568->128) Linear(128->10) on 28x28
  inputs (0.21M parameters), batch 64;
* ``lm``: a 2-layer GPT-2-style causal LM (d=128, 4 heads, vocab 512, sequence length
  64, right padding with an attention mask, Hugging Face-style ``Conv1D`` layers and an
  output layer tied to the token embedding; 0.47M parameters), measurement = the summed
  log-probability of the next tokens, batch 16.

Featurizers (proj_dim k for all projections):

* ``fwd+bwd``: ``task.measurement(model, batch).sum().backward()``, the limit;
* ``ours-dense``: torch.func per-example gradients + our Gaussian projector (blockwise);
* ``ours-sparse``: the same gradients + our sparse sign projector (nnz=4);
* ``ours-factored``: hooks + Kronecker factors per layer, no per-example gradients;
* ``ours-factored+store``: ``featurize()`` into a FeatureStore with the factored
  projector, including TRAK's Q (one more forward) and the checksummed chunk writes;
* ``traker-basic``: the same torch.func per-example gradients (what traker's CPU path,
  FunctionalGradientComputer, computes: vmap over grad) projected by traker 0.3.2's
  ``BasicProjector`` with the settings its TRAKer picks on CPU (normal entries, block 100,
  float32, i.e. use_half_precision=False);
* ``dattri``: the same gradients projected by dattri 0.3.0's
  ``dattri.func.projection.random_project`` (its BasicProjector on CPU, normal entries).

Clock: by default each batch is timed by the process's CPU time with 1 torch thread
(``--threads 1 --clock cpu``). Other jobs share the machine's 2 cores; with 2 threads and
wall-clock timing, identical rows of one run differed by up to 50x (OpenMP threads wait
for a descheduled peer), while CPU time of one thread measures the work itself. On an idle
machine, wall time with one thread equals this; ``--threads 2 --clock wall`` measures that.

Each row runs in a fresh subprocess, so ``peak_mb`` is that process's
peak RSS (ru_maxrss: model, data, torch and the featurizer). Timing: up to three untimed
warm-up batches (at most 2 s of them; first calls are several times slower), then batches until ``--seconds`` have passed (at most ``--batches``); a featurizer
whose warm-up batch alone takes longer than ``--slow`` seconds is reported from that one
batch (it includes one-time costs, which are negligible at that scale).
``ratio_to_fwd_bwd`` is fwd+bwd's examples/s divided by the row's.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MODELS = ("mlp", "cnn", "lm")
FEATURIZERS = ("fwd+bwd", "ours-factored", "ours-factored+store", "ours-sparse", "ours-dense", "traker-basic", "dattri")
WARMUP = 3  # untimed batches (at most 2 s of them) before timing
COLUMNS = ["model", "n_params", "featurizer", "proj_dim", "examples_per_s", "peak_mb", "ratio_to_fwd_bwd"]


# -- a GPT-2-style causal LM with Hugging Face's Conv1D layout ---------------------------
class Conv1D(nn.Module):
    """``transformers.pytorch_utils.Conv1D``: weight (in, out), ``y = x @ W + b``."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], self.nf)


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.attn_proj = Conv1D(3 * d, d), Conv1D(d, d)
        self.c_fc, self.mlp_proj = Conv1D(4 * d, d), Conv1D(d, 4 * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # right padding: causal is enough
        x = x + self.attn_proj(attended.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int = 512, d: int = 128, heads: int = 4, layers: int = 2, context: int = 64):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def _lm_task():
    from attributor.tasks import Task

    class CausalLMTask(Task, key="bench-causal-lm"):
        """f = sum of log p(next token) over real (mask 1) positions; batch = dict(input_ids, attention_mask)."""

        def measurement(self, model, batch):
            ids, mask = batch["input_ids"], batch["attention_mask"]
            logp = torch.log_softmax(model(ids)[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            return (logp * mask[:, 1:]).sum(-1)

        def train_loss(self, model, batch):
            return -self.measurement(model, batch) / batch["attention_mask"][:, 1:].sum(-1).clamp_min(1)

    return CausalLMTask()


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build(name: str):
    """``(model, task, batches, batch_size)`` for a benchmark model, all from fixed seeds."""
    from attributor.models import MLP
    from attributor.tasks import ClassificationTask

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    if name == "mlp":
        model, task, size = MLP(784, 10, hidden=(1024, 256)), ClassificationTask(), 128
        make = lambda: (torch.randn(size, 784, generator=generator), torch.randint(0, 10, (size,), generator=generator))
    elif name == "cnn":
        model, task, size = CNN(), ClassificationTask(), 64
        make = lambda: (torch.randn(size, 1, 28, 28, generator=generator), torch.randint(0, 10, (size,), generator=generator))
    else:
        model, task, size = TinyGPT(), _lm_task(), 16

        def make():
            ids = torch.randint(1, 512, (size, 64), generator=generator)
            lengths = torch.randint(48, 65, (size,), generator=generator)
            mask = (torch.arange(64) < lengths.unsqueeze(1)).long()
            return {"input_ids": ids * mask, "attention_mask": mask}
    return model.eval(), task, make, size


# -- one row, in a child process --------------------------------------------------------
def _rows_of(batch, size):
    """The batch as a list of examples (for featurize's map-style dataset)."""
    if isinstance(batch, dict):
        return [{k: v[i] for k, v in batch.items()} for i in range(size)]
    return [tuple(t[i] for t in batch) for i in range(size)]


def _fwd_bwd(model, task):
    def step(batch):
        model.zero_grad(set_to_none=True)
        task.measurement(model, batch).sum().backward()
    return step


def _step_function(featurizer: str, model, task, proj_dim: int):
    from attributor.features import make_projector, per_example_gradients
    from attributor.features.featurize import make_featurizer
    from attributor.features.gradients import tracked_parameter_names

    names = tracked_parameter_names(model, task)
    n_params = sum(p.numel() for p in model.parameters())
    if featurizer == "fwd+bwd":
        return _fwd_bwd(model, task), None
    if featurizer == "ours-factored":
        engine = make_featurizer(model, task, make_projector("factored", proj_dim, seed=0), names)
        engine.__enter__()
        return (lambda batch: engine.features(batch, 0)), engine.dim
    grads_of = lambda batch: per_example_gradients(model, task, batch, names).detach()
    if featurizer in ("ours-dense", "ours-sparse"):
        projector = make_projector("gaussian" if featurizer == "ours-dense" else "sparse", proj_dim, seed=0)
        return (lambda batch: projector.project(grads_of(batch), 0)), proj_dim
    if featurizer == "traker-basic":
        from trak.projectors import BasicProjector, ProjectionType

        projector = BasicProjector(grad_dim=n_params, proj_dim=proj_dim, seed=0, proj_type=ProjectionType.normal,
                                   device="cpu", dtype=torch.float32)
        return (lambda batch: projector.project(grads_of(batch), model_id=0)), proj_dim
    if featurizer == "dattri":
        from dattri.func.projection import random_project

        state = {}

        def step(batch):
            grads = grads_of(batch)
            if "project" not in state:
                state["project"] = random_project(grads, grads.shape[0], proj_dim, 32, proj_seed=0, proj_type="normal", device="cpu")
            return state["project"](grads, ensemble_id=0)
        return step, proj_dim
    raise ValueError(featurizer)


CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCKS = {"clock": "cpu"}  # set by main from --clock


def _timed(step, batch) -> float:
    clock = CLOCK[CLOCKS["clock"]]
    start = clock()
    step(batch)
    return clock() - start


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _store_row(model, task, batches, size, proj_dim, work: Path) -> tuple[float, float, int]:
    """featurize() over all timed batches at once: (seconds, fwd+bwd seconds of the same batches, dim)."""
    from attributor.features import featurize, make_projector
    from attributor.models import save_checkpoint

    checkpoint = save_checkpoint(model, work / "ckpt.pt")
    reference = _fwd_bwd(model, task)
    rows = [row for batch in batches[WARMUP:] for row in _rows_of(batch, size)]

    def run(data, folder):
        return featurize(model, task, data, [checkpoint], work / folder, make_projector("factored", proj_dim, seed=0),
                         chunk_size=1024, batch_size=size, progress=False)
    run(rows[:size], "warm-up")
    before = sum(_timed(reference, b) for b in batches[WARMUP:])
    clock = CLOCK[CLOCKS["clock"]]
    start = clock()
    store = run(rows, "store")
    seconds = clock() - start
    after = sum(_timed(reference, b) for b in batches[WARMUP:])
    return seconds, (before + after) / 2, store.dim


def child(model_name: str, featurizer: str, proj_dim: int, seconds: float, max_batches: int, slow: float,
          threads: int = 1) -> dict:
    torch.set_num_threads(threads)
    model, task, make, size = build(model_name)
    batches = [make() for _ in range(max_batches + WARMUP)]
    reference = _fwd_bwd(model, task)
    result = {"model": model_name, "n_params": sum(p.numel() for p in model.parameters()), "featurizer": featurizer}
    if featurizer == "ours-factored+store":
        with tempfile.TemporaryDirectory(prefix="bench-featurize-") as work:
            total, reference_total, dim = _store_row(model, task, batches, size, proj_dim, Path(work))
        n = size * (len(batches) - WARMUP)
        return {**result, "proj_dim": dim, "examples_per_s": n / total, "ratio": total / reference_total,
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "batches": len(batches) - WARMUP}
    step, dim = _step_function(featurizer, model, task, proj_dim)
    times, reference_times = [], []
    first = _timed(step, batches[0])
    if first > slow:  # one batch is the measurement; fwd+bwd timed around it
        times = [first]
        for batch in batches[:WARMUP + 3]:
            reference_times.append(_timed(reference, batch))
        reference_times = reference_times[WARMUP:]
    else:
        start = time.perf_counter()
        for batch in batches[1:WARMUP]:
            if time.perf_counter() - start > 2.0:
                break
            step(batch)
            reference(batch)
        for batch in batches[WARMUP:]:  # interleaved, so that other jobs on the machine slow both alike
            reference_times.append(_timed(reference, batch))
            times.append(_timed(step, batch))
            if sum(times) + sum(reference_times) > seconds:
                break
    return {**result, "proj_dim": dim if dim is not None else "", "examples_per_s": size / _median(times),
            "ratio": _median(times) / _median(reference_times),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "batches": len(times)}


class GeneratedMnist1D(torch.utils.data.Dataset):
    """``n`` mnist1d-sized examples, example i generated from ``(seed, i)`` when read.

    x = template[y] circularly shifted by up to 5 positions + 0.3 N(0, I), y = i mod 10:
    the shape and difficulty of mnist1d's signals, without storing n rows anywhere.
    """

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed = n, seed
        self.templates = torch.randn(10, 40, generator=torch.Generator().manual_seed(seed)).cumsum(1) / 3

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        label = index % 10
        shift = int(torch.randint(-5, 6, (1,), generator=generator))
        x = self.templates[label].roll(shift) + 0.3 * torch.randn(40, generator=generator)
        return x, torch.tensor(label)


def stream(n: int, out: Path, proj_dim: int, chunk_size: int, batch_size: int) -> dict:
    """Featurize ``n`` generated examples into ``out/store`` (factored); time and peak RSS."""
    from attributor.evaluation.memory import PeakMemory
    from attributor.features import featurize, make_projector
    from attributor.models import MLP, save_checkpoint
    from attributor.tasks import ClassificationTask

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = MLP(40, 10, hidden=(128,))
    checkpoint = save_checkpoint(model, out / "mlp.pt")
    data = GeneratedMnist1D(n)
    with PeakMemory(interval=0.05) as peak:
        start = time.perf_counter()
        store = featurize(model, ClassificationTask(), data, [checkpoint], out / "store",
                          make_projector("factored", proj_dim, seed=0), chunk_size=chunk_size, batch_size=batch_size,
                          progress=False, overwrite=True)
        seconds = time.perf_counter() - start
    result = {"n": n, "n_params": sum(p.numel() for p in model.parameters()), "dim": store.dim, "dtype": str(store.dtype),
              "chunk_size": chunk_size, "batch_size": batch_size, "seconds": round(seconds, 1),
              "examples_per_s": round(n / seconds), "peak_rss_mb_sampled": round(peak.peak_mb),
              "peak_rss_mb_maxrss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              "store_gb": round(sum(f.stat().st_size for f in (out / "store").rglob("*.npy")) / 2**30, 2),
              "complete": store.is_complete("train")}
    (out / "stream.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="output folder (featurize.csv)")
    parser.add_argument("--proj-dim", type=int, default=4096)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--featurizers", default=",".join(FEATURIZERS))
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per row (after the warm-up batch)")
    parser.add_argument("--batches", type=int, default=30, help="at most this many timed batches per row")
    parser.add_argument("--slow", type=float, default=5.0, help="a warm-up batch longer than this is the measurement")
    parser.add_argument("--stream", type=int, help="the memory check: featurize this many generated examples")
    parser.add_argument("--chunk-size", type=int, default=4096, help="(--stream) examples per store chunk")
    parser.add_argument("--batch-size", type=int, default=1024, help="(--stream) examples per batch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per row")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="cpu",
                        help="cpu: the process's CPU time per batch (robust to other jobs); wall: elapsed time")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "FEATURIZER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        CLOCKS["clock"] = args.clock
        print(json.dumps(child(*args.child, args.proj_dim, args.seconds, args.batches, args.slow, args.threads)))
        return
    if args.out is None:
        parser.error("--out is required")
    if args.stream:
        args.out.mkdir(parents=True, exist_ok=True)
        print(json.dumps(stream(args.stream, args.out, args.proj_dim, args.chunk_size, args.batch_size), indent=2))
        return
    rows = []
    for model_name in args.models.split(","):
        for featurizer in args.featurizers.split(","):
            command = [sys.executable, __file__, "--child", model_name, featurizer, "--proj-dim", str(args.proj_dim),
                       "--seconds", str(args.seconds), "--batches", str(args.batches), "--slow", str(args.slow),
                       "--threads", str(args.threads), "--clock", args.clock]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{model_name} / {featurizer} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["ratio_to_fwd_bwd"] = round(row["ratio"], 2)
            row["examples_per_s"] = round(row["examples_per_s"], 1)
            row["peak_mb"] = round(row["peak_mb"])
            print(f"{model_name:4s} {featurizer:20s} {row['examples_per_s']:>10} ex/s  peak {row['peak_mb']} MB  "
                  f"ratio {row['ratio_to_fwd_bwd']}  ({row['batches']} timed batches)", file=sys.stderr, flush=True)
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "featurize.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
