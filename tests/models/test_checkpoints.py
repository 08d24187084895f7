"""load_checkpoint: the file kinds it reads, what it refuses, and the one message a mismatch gets."""

from __future__ import annotations

import hashlib
import pickle

import pytest
import torch

from zoo import mlp

from attributor.errors import DataError
from attributor.models import MLP, checkpoint_id, load_checkpoint, save_checkpoint
from attributor.models.checkpoints import read_state_dict, restoring_state


def _assert_weights_of(model, reference):
    state, expected = model.state_dict(), reference.state_dict()
    assert list(state) == list(expected)
    for key in expected:
        assert torch.equal(state[key], expected[key]), key


def test_save_then_load_is_bit_identical(tmp_path):
    source, target = mlp(seed=0), mlp(seed=1)
    path = save_checkpoint(source, tmp_path / "c.pt")
    assert load_checkpoint(target, path) is target
    _assert_weights_of(target, source)
    assert checkpoint_id(path) == hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_an_architecture_mismatch_names_every_kind_of_bad_key_in_one_message(tmp_path):
    path = save_checkpoint(mlp(hidden=(8, 4), seed=0), tmp_path / "deeper.pt")  # net.0, net.2, net.4
    model = mlp(hidden=(9,), seed=1)  # net.0 (9 x 6), net.2 (3 x 9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DataError) as info:
        load_checkpoint(model, path)
    message = str(info.value)
    assert "\n" not in message
    assert f"checkpoint {path} does not fit the model class MLP" in message
    assert "2 unexpected keys: net.4.weight, net.4.bias" in message
    assert "net.0.weight (model expects [9, 6], checkpoint has [8, 6])" in message
    assert "net.2.weight (model expects [3, 9], checkpoint has [4, 8])" in message
    assert "4 mis-shaped keys" in message
    assert "check that model.* names the architecture the checkpoint was saved from" in message.lower()
    for key, value in model.state_dict().items():  # nothing was copied into the model
        assert torch.equal(value, before[key])

    path = save_checkpoint(mlp(hidden=(8,), seed=0), tmp_path / "shallower.pt")
    with pytest.raises(DataError, match=r"2 missing keys: net\.4\.weight, net\.4\.bias") as info:
        load_checkpoint(mlp(hidden=(8, 4), seed=0), path)
    assert "mis-shaped" in str(info.value)


def test_long_key_lists_are_capped(tmp_path):
    wide = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(10)])  # 20 keys
    path = tmp_path / "c.pt"
    torch.save({"other.weight": torch.zeros(1)}, path)
    with pytest.raises(DataError) as info:
        load_checkpoint(wide, path)
    message = str(info.value)
    assert "20 missing keys: 0.weight, 0.bias, 1.weight, 1.bias, 2.weight, 2.bias, 3.weight, 3.bias ... and 12 more" in message
    assert "1 unexpected key: other.weight" in message


def test_a_wrapper_prefix_is_pointed_out(tmp_path):
    model = mlp(seed=0)
    path = tmp_path / "wrapped.pt"
    torch.save({f"model.{k}": v for k, v in model.state_dict().items()}, path)
    with pytest.raises(DataError, match="with the prefix 'model.'"):
        load_checkpoint(mlp(seed=1), path)


@pytest.mark.parametrize("name", ["weights.safetensors", "weights.bin", "weights"])
def test_safetensors_files_by_suffix_or_by_content(tmp_path, name):
    from safetensors.torch import save_file

    source, target = mlp(seed=0), mlp(seed=1)
    save_file(source.state_dict(), str(tmp_path / name))
    load_checkpoint(target, tmp_path / name)
    _assert_weights_of(target, source)


@pytest.mark.parametrize("wrap", [
    lambda sd, opt: {"state_dict": sd, "epoch": 3, "global_step": 120, "optimizer_states": [opt],
                     "pytorch-lightning_version": "2.4.0"},
    lambda sd, opt: {"model": sd, "optimizer": opt, "step": 10},
], ids=["lightning-state_dict", "model-key"])
def test_trainer_checkpoints_with_the_state_dict_under_one_key(tmp_path, wrap):
    source, target = mlp(seed=0), mlp(seed=1)
    optimizer = torch.optim.Adam(source.parameters())
    source(torch.randn(4, 6, dtype=torch.float64)).sum().backward()
    optimizer.step()
    torch.save(wrap(source.state_dict(), optimizer.state_dict()), tmp_path / "trainer.ckpt")
    load_checkpoint(target, tmp_path / "trainer.ckpt")
    _assert_weights_of(target, source)


def test_both_wrapper_keys_or_non_tensor_values_are_refused(tmp_path):
    state = mlp(seed=0).state_dict()
    torch.save({"state_dict": state, "model": state}, tmp_path / "both.pt")
    with pytest.raises(DataError, match="both 'state_dict' and 'model'"):
        load_checkpoint(mlp(seed=1), tmp_path / "both.pt")
    torch.save({**state, "note": "trained on Tuesday", "epoch": 3}, tmp_path / "extra.pt")
    with pytest.raises(DataError, match=r"2 entries are not name -> tensor: 'note' \(str\), 'epoch' \(int\)"):
        load_checkpoint(mlp(seed=1), tmp_path / "extra.pt")
    torch.save([state], tmp_path / "list.pt")
    with pytest.raises(DataError, match="does not hold a state dict"):
        load_checkpoint(mlp(seed=1), tmp_path / "list.pt")


def test_hugging_face_weight_files_with_tied_embeddings(tmp_path):
    """save_pretrained writes model.safetensors without the LM head tied to the input embedding;
    pytorch_model.bin is a torch.save'd state dict."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=40, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    source = transformers.GPT2LMHeadModel(config)
    source.save_pretrained(str(tmp_path / "hf"))
    assert "lm_head.weight" not in read_state_dict(tmp_path / "hf" / "model.safetensors")
    torch.manual_seed(1)
    target = transformers.GPT2LMHeadModel(config)
    load_checkpoint(target, tmp_path / "hf" / "model.safetensors")
    _assert_weights_of(target, source)
    assert target.lm_head.weight.data_ptr() == target.transformer.wte.weight.data_ptr()  # still tied

    torch.save(source.state_dict(), tmp_path / "pytorch_model.bin")
    torch.manual_seed(2)
    target = transformers.GPT2LMHeadModel(config)
    load_checkpoint(target, tmp_path / "pytorch_model.bin")
    _assert_weights_of(target, source)


class _Payload:
    def __reduce__(self):
        import os

        return (os.mkdir, (self.target,))


def test_pickled_code_is_never_run(tmp_path):
    payload = _Payload()
    payload.target = str(tmp_path / "pwned")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"net.0.weight": payload}, protocol=2))
    torch.save(mlp(seed=0), tmp_path / "whole_model.pt")  # a pickled module, not a state dict
    for name in ("evil.pt", "whole_model.pt"):
        with pytest.raises(DataError, match=f"{name} cannot be read as a weights-only state dict"):
            load_checkpoint(mlp(seed=1), tmp_path / name)
    assert not (tmp_path / "pwned").exists()


def test_unreadable_files_name_the_file_in_one_line(tmp_path):
    save_checkpoint(mlp(seed=0), tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 4)
    from safetensors.torch import save_file

    save_file(mlp(seed=0).state_dict(), str(tmp_path / "good.safetensors"))
    data = (tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) - 100])
    for name, kind in [("truncated.pt", "weights-only state dict"), ("noise.pt", "not a torch.save or safetensors file"),
                       ("truncated.safetensors", "safetensors file")]:
        with pytest.raises(DataError) as info:
            load_checkpoint(mlp(seed=1), tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and kind in str(info.value)
        assert "\n" not in str(info.value)
    for function in (load_checkpoint, checkpoint_id):
        with pytest.raises(DataError, match="does not exist"):
            function(*((mlp(),) if function is load_checkpoint else ()), tmp_path / "absent.pt")


def test_restoring_state_puts_back_weights_and_modes_after_an_error(tmp_path):
    model = MLP(6, 3, hidden=(8,)).double()
    model.train()
    model.net[0].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = save_checkpoint(mlp(seed=5), tmp_path / "c.pt")
    with pytest.raises(RuntimeError, match="mid-way"):
        with restoring_state(model):
            load_checkpoint(model, path)
            model.eval()
            raise RuntimeError("mid-way")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert model.training and not model.net[0].training and model.net[2].training
