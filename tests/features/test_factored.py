"""Factored (Kronecker) featurizer against the explicit computation, in float64.

The explicit answer: per-example gradients from torch.func (``per_example_gradients``),
each layer's weight gradient written as a (rows, cols) matrix by hand (bias as an extra
column, or row for Conv1D), times ``kron(P_rows, P_cols)`` formed explicitly; the other
parameters times the rest projector's matrix.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attributor.errors import ConfigError
from attributor.features import make_projector, per_example_gradients
from attributor.features.factored_plan import balanced_factors, split_dim
from attributor.features.featurize import make_featurizer
from attributor.tasks import ClassificationTask, Task


B, T, V, D = 4, 5, 11, 6


@pytest.fixture(autouse=True, scope="module")
def _float64():
    previous = torch.float32
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


class Conv1D(nn.Module):
    """Hugging Face's Conv1D, re-implemented: weight (in, out), y = x @ W + b."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.3)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], self.nf)


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 4, 3, stride=2, padding=1, padding_mode="reflect", bias=False)
        self.norm = nn.LayerNorm(4 * 3 * 3)
        self.head = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        h = torch.tanh(self.bn(self.conv1(x)))
        h = torch.tanh(self.conv2(h)).flatten(1)
        return self.head(self.norm(h))


class SequenceModel(nn.Module):
    """Token + position embeddings, a Conv1D, a LayerNorm, and an output tied to the tokens."""

    def __init__(self, tied: bool = True, position_on_arange: bool = True):
        super().__init__()
        self.position_on_arange = position_on_arange
        self.wte = nn.Embedding(V, D, padding_idx=0)
        self.wpe = nn.Embedding(T, D)
        self.mix = Conv1D(D, D)
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, V, bias=False)
        if tied:
            self.head.weight = self.wte.weight
        self.scale = nn.Parameter(torch.tensor(1.5))  # a loose parameter used by this forward

    def forward(self, input_ids, attention_mask=None):
        positions = torch.arange(input_ids.shape[1])
        if not self.position_on_arange:
            positions = positions.expand_as(input_ids)
        h = self.wte(input_ids) + self.wpe(positions)
        h = h + torch.tanh(self.mix(h))
        return self.head(self.norm(h)) * self.scale  # (B, T, V)


class TokenTask(Task, key="test-factored-token"):
    """f = sum over positions of the logit of the next token (masked with ``masked=True``)."""

    def __init__(self, masked: bool = False):
        self.masked = masked

    def _per_position(self, model, batch):
        logits = model(batch["input_ids"])
        return logits.gather(-1, batch["labels"].unsqueeze(-1)).squeeze(-1)  # (B, T)

    def measurement(self, model, batch):
        values = self._per_position(model, batch)
        if self.masked:
            values = values * batch["attention_mask"]
        return values.sum(-1)

    def train_loss(self, model, batch):
        return -self.measurement(model, batch)


class AttentionModel(nn.Module):
    """nn.MultiheadAttention uses out_proj functionally: the exact path must take over."""

    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(D, 2, batch_first=True)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        return self.head(self.attention(x, x, x, need_weights=False)[0].mean(1))


def _matrix(kind: str, gw: torch.Tensor, gb: torch.Tensor | None) -> torch.Tensor:
    """The per-example weight gradient as (B, rows, cols), written out per kind."""
    n = gw.shape[0]
    if kind in ("linear", "conv2d"):
        m = gw.reshape(n, gw.shape[1], -1)
        return m if gb is None else torch.cat([m, gb.reshape(n, -1, 1)], dim=2)
    if kind == "conv1d":  # weight (in, out): the bias is an extra row
        return gw if gb is None else torch.cat([gw, gb.reshape(n, 1, -1)], dim=1)
    return gw  # embedding (vocab, dim)


def _explicit(featurizer, model, task, batch, checkpoint):
    names = featurizer.names
    grads = per_example_gradients(model, task, batch, names)
    params = dict(model.named_parameters())
    columns, offset = {}, 0
    for name in names:
        size = params[name].numel()
        columns[name] = grads[:, offset : offset + size].reshape(grads.shape[0], *params[name].shape)
        offset += size
    seed = featurizer.projector.seed
    parts = []
    for block in featurizer.plan.blocks:
        matrix = _matrix(block.kind.name, columns[block.weight], columns.get(block.bias))
        kron = torch.kron(block.factor(0, seed, checkpoint, torch.float64), block.factor(1, seed, checkpoint, torch.float64))
        assert kron.shape == (block.rows * block.cols, block.k_rows * block.k_cols)
        parts.append(matrix.reshape(matrix.shape[0], -1) @ kron)
    if featurizer.plan.rest:
        rest = torch.cat([columns[n].reshape(grads.shape[0], -1) for n in featurizer.plan.rest], dim=1)
        if featurizer.rest_projector is not None:
            rest = rest @ featurizer.rest_projector.matrix(rest.shape[1], checkpoint).double()
        parts.append(rest)
    return torch.cat(parts, dim=1)


def _features(model, task, batch, dim, seed=3, checkpoint=1, rest="gaussian"):
    featurizer = make_featurizer(model.eval(), task, make_projector("factored", dim, seed=seed, rest=rest))
    with featurizer:
        got = featurizer.features(batch, checkpoint)
    assert got.shape == (len(next(iter(batch.values())) if isinstance(batch, dict) else batch[1]), featurizer.dim)
    return featurizer, got


def _token_batch(seed=0, lengths=(5, 3, 4, 2)):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, T), generator=generator)
    mask = (torch.arange(T) < torch.tensor(lengths).unsqueeze(1)).long()
    ids = ids * mask  # padding token 0
    labels = torch.randint(0, V, (B, T), generator=generator)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_linear_mlp_with_biases_equals_kronecker_of_exact_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 9), nn.Tanh(), nn.Linear(9, 5), nn.Tanh(), nn.Linear(5, 3))
    batch = (torch.randn(B, 7), torch.randint(0, 3, (B,)))
    featurizer, got = _features(model, ClassificationTask(), batch, dim=60)
    assert [b.kind.name for b in featurizer.plan.blocks] == ["linear"] * 3 and not featurizer.plan.rest
    torch.testing.assert_close(got, _explicit(featurizer, model, ClassificationTask(), batch, 1), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dim", [50, 10**6])  # 10**6: every factor is the identity, the features are the gradients
def test_conv2d_batchnorm_layernorm_equal_the_explicit_computation(dim):
    torch.manual_seed(1)
    model = ConvNet()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    batch = (torch.randn(B, 2, 6, 6), torch.randint(0, 3, (B,)))
    featurizer, got = _features(model, ClassificationTask(), batch, dim=dim)
    plan = featurizer.plan
    assert [(b.kind.name, b.bias is not None) for b in plan.blocks] == [("conv2d", True), ("conv2d", False), ("linear", True)]
    assert plan.rest == ["bn.weight", "bn.bias", "norm.weight", "norm.bias"]
    assert (featurizer.rest_projector is not None) == (dim == 50)  # 78 rest parameters > their share of 50
    torch.testing.assert_close(got, _explicit(featurizer, model, ClassificationTask(), batch, 1), rtol=1e-9, atol=1e-12)
    if dim == 10**6:
        assert featurizer.dim == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("position_on_arange,dim", [(True, 120), (False, 120), (False, 10**6)])
def test_embedding_conv1d_tied_head_and_loose_parameters(position_on_arange, dim):
    torch.manual_seed(2)
    model = SequenceModel(position_on_arange=position_on_arange)
    batch = _token_batch(lengths=(T,) * B)  # no padding: exact equality with the plain gradient
    batch["input_ids"][:, 0] = 0  # but padding_idx tokens: their embedding row gets no gradient
    task = TokenTask()
    featurizer, got = _features(model, task, batch, dim=dim)
    kinds = {b.weight: (b.kind.name, b.modules) for b in featurizer.plan.blocks}
    assert kinds["wte.weight"] == ("embedding", ["wte", "head"])  # tied: one block, both modules
    assert kinds["mix.weight"][0] == "conv1d" and kinds["wpe.weight"][0] == "embedding"
    assert featurizer.plan.rest == ["scale", "norm.weight", "norm.bias"]  # named_parameters order
    torch.testing.assert_close(got, _explicit(featurizer, model, task, batch, 1), rtol=1e-9, atol=1e-12)


def test_padded_positions_do_not_contribute():
    """f sums over all positions; with the mask, the features equal the exact gradient of
    the masked sum (and differ from the unmasked one)."""
    torch.manual_seed(3)
    model = SequenceModel(tied=False, position_on_arange=False)
    batch = _token_batch()
    featurizer, got = _features(model, TokenTask(masked=False), batch, dim=200, rest="sparse")
    masked = _explicit(featurizer, model, TokenTask(masked=True), batch, 1)
    torch.testing.assert_close(got, masked, rtol=1e-9, atol=1e-12)
    unmasked = _explicit(featurizer, model, TokenTask(masked=False), batch, 1)
    assert not torch.allclose(got, unmasked)
    # changing the tokens at padded positions changes nothing
    other = {**batch, "input_ids": torch.where(batch["attention_mask"] == 1, batch["input_ids"], 7)}
    featurizer2, got2 = _features(model, TokenTask(masked=False), other, dim=200, rest="sparse")
    torch.testing.assert_close(got2, got, rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # torch.func's attention batching rule
def test_modules_used_functionally_fall_back_to_the_exact_path():
    torch.manual_seed(4)
    model = AttentionModel()
    batch = (torch.randn(B, T, D), torch.randint(0, 3, (B,)))
    featurizer, got = _features(model, ClassificationTask(), batch, dim=40)
    assert "attention.out_proj" in {m for b in featurizer.plan.blocks for m in b.modules}  # never called by itself
    torch.testing.assert_close(got, _explicit(featurizer, model, ClassificationTask(), batch, 1), rtol=1e-9, atol=1e-12)


class LinearWithExtra(nn.Linear):
    """A Linear that also owns another parameter: one module, a block and a rest parameter."""

    def __init__(self, *args):
        super().__init__(*args)
        self.extra = nn.Parameter(torch.randn(3))


class ScaledLinear(nn.Linear):
    """Overrides forward: y = gain * (x W^T + b) does not factor as a Linear; replayed exactly."""

    def __init__(self, *args):
        super().__init__(*args)
        self.gain = nn.Parameter(torch.tensor(0.7))

    def forward(self, x):
        return self.gain * super().forward(x)


def test_subclasses_and_modules_with_extra_parameters():
    torch.manual_seed(5)
    model = nn.Sequential(LinearWithExtra(7, 9), nn.Tanh(), ScaledLinear(9, 4))
    batch = (torch.randn(B, 7), torch.randint(0, 4, (B,)))
    featurizer, got = _features(model, ClassificationTask(), batch, dim=60)
    assert [b.weight for b in featurizer.plan.blocks] == ["0.weight"]
    assert featurizer.plan.rest == ["0.extra", "2.weight", "2.bias", "2.gain"]
    torch.testing.assert_close(got, _explicit(featurizer, model, ClassificationTask(), batch, 1), rtol=1e-9, atol=1e-12)


def test_factors_are_regenerated_per_seed_checkpoint_and_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 20), nn.Tanh(), nn.Linear(20, 30))
    batch = (torch.randn(B, 30), torch.randint(0, 30, (B,)))
    a = _features(model, ClassificationTask(), batch, dim=200, seed=3, checkpoint=0)
    b = _features(model, ClassificationTask(), batch, dim=200, seed=3, checkpoint=0)
    assert torch.equal(a[1], b[1])
    assert not torch.allclose(a[1], _features(model, ClassificationTask(), batch, dim=200, seed=3, checkpoint=1)[1])
    assert not torch.allclose(a[1], _features(model, ClassificationTask(), batch, dim=200, seed=4, checkpoint=0)[1])
    first, second = a[0].plan.blocks
    assert not torch.equal(first.factor(1, 3, 0, torch.float64)[:20, :5], second.factor(0, 3, 0, torch.float64)[:20, :5])


def test_spec_records_the_layout_and_dim_is_the_concatenated_width():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.LayerNorm(10))
    featurizer = make_featurizer(model, ClassificationTask(), make_projector("factored", 256, seed=0))
    spec = featurizer.spec()
    assert spec["kind"] == "factored" and spec["dim"] == 256 and spec["seed"] == 0
    assert [layer["shape"] for layer in spec["layers"]] == [[32, 65], [10, 33]]
    widths = [a * b for a, b in (layer["k"] for layer in spec["layers"])]
    assert spec["rest_parameters"]["names"] == ["3.weight", "3.bias"]
    assert spec["rest_parameters"]["dim"] == 20 and spec["rest_parameters"]["projector"] == {"kind": "identity"}
    assert featurizer.dim == sum(widths) + 20 <= 256


def test_split_and_factor_rules():
    assert split_dim(100, [1000, 1000, 20]) == [40, 40, 20]  # the small group is capped, the rest re-shared
    assert sum(split_dim(4096, [800_000, 260_000, 2570])) == 4096
    assert balanced_factors(128, 32, 65) == (11, 11)
    assert balanced_factors(1366, 1024, 785) == (36, 37)  # balanced, not the largest product (683 x 2)
    assert balanced_factors(100, 4, 33) == (4, 25)  # rows exhausted: identity on that side
    assert balanced_factors(10**6, 10, 33) == (10, 33)
    with pytest.raises(ConfigError, match="proj_dim"):
        make_featurizer(ConvNet(), ClassificationTask(), make_projector("factored", 3))
    with pytest.raises(ConfigError):
        make_projector("factored", 16).project(torch.zeros(2, 5), 0)
