"""The one checkpoint reader of RAM, GroundingDINO, SAM and the trainer's base file."""

import argparse

import pytest
import torch
from safetensors.torch import save_file

from realign_diff.checkpoint_file import ModelFileError, read_state_dict


def test_reads_safetensors_and_unwraps_pth_model_and_ddp_prefixes(tmp_path):
    weights = {"a.weight": torch.arange(6.0).view(2, 3), "b.bias": torch.ones(2)}
    save_file(weights, str(tmp_path / "w.SAFETENSORS"))
    torch.save({"model": {f"module.{k}": v for k, v in weights.items()}, "epoch": 3}, tmp_path / "w.pth")
    torch.save({"state_dict": dict(weights), "global_step": 10}, tmp_path / "w.ckpt")
    for name in ("w.SAFETENSORS", "w.pth", "w.ckpt"):
        state = read_state_dict(tmp_path / name)
        assert state.keys() == weights.keys(), name
        assert all(torch.equal(state[k], weights[k]) for k in weights), name


def test_bad_files_say_what_is_wrong(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFileError, match="junk.safetensors is not a readable model file: it is a text file"):
        read_state_dict(tmp_path / "junk.safetensors")
    good = tmp_path / "good.pth"
    torch.save({"w": torch.zeros(1000)}, good)
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:300])
    with pytest.raises(
        ModelFileError, match=r"cut.pth is not a readable model file: it is truncated .*Download .* again"
    ):
        read_state_dict(tmp_path / "cut.pth")
    torch.save({"note": "no tensors here"}, tmp_path / "empty.pth")
    with pytest.raises(
        ModelFileError,
        match=r"empty.pth is not a readable model file: it is not a model checkpoint \(it holds no tensors\)",
    ):
        read_state_dict(tmp_path / "empty.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ModelFileError, match=r"it is not a state dict \(it holds a list\)"):
        read_state_dict(tmp_path / "list.pth")


def test_python_objects_are_never_unpickled(tmp_path):
    torch.save({"w": torch.zeros(1), "odd": argparse.Namespace(lr=1e-4)}, tmp_path / "pickled.pth")
    with pytest.raises(
        ModelFileError, match=r"pickled.pth contains Python code \(pickled objects such as argparse.Namespace\)"
    ):
        read_state_dict(tmp_path / "pickled.pth")
