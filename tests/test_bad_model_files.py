"""Every kind of broken model file, through the real loaders: the message names the file, says what it looks like
and how to get it again, and is the project's own error (never a raw IndexError, KeyError or SafetensorError)."""

from __future__ import annotations

import io
import json
import logging
import random
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from realign_diff.checkpoint_file import ModelFileError, read_state_dict
from realign_diff.dense_captioner.grounded_sam_io import GROUNDING_DINO_FILES, SAM_FILES
from realign_diff.dense_captioner.grounding import load_grounding_dino
from realign_diff.dense_captioner.ram import RAM_PLUS_URL, TAG_LIST_FILE, THRESHOLDS_FILE, load_ram
from realign_diff.dense_captioner.sam import load_sam
from realign_diff.refl.models import BaseCheckpointError, read_checkpoint
from realign_diff.reward import Blip2FolderError, CaptionReward
from realign_testkit.grounding import TINY_GROUNDING_DINO, write_bert_folder, write_tiny_grounding_dino
from realign_testkit.ram import TINY_TAGS, write_tiny_ram
from realign_testkit.sam import write_tiny_sam

LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\noid sha256:4b8939a88964f0f4ff5f5b2642c598a6\nsize 2564550879\n"
)


def _zip_of_text() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("weights/readme.txt", "not a checkpoint")
    return buffer.getvalue()


def _random_bytes() -> bytes:
    return b"\x13" + random.Random(0).randbytes(4095)  # not a pickle, zip or text start


# kind -> (file suffix, bytes from a good checkpoint's (zip, legacy, safetensors) bytes, what the message says)
KINDS = {
    "empty pth": (".pth", lambda good: b"", "empty (0 bytes)"),
    "text pth": (".pth", lambda good: b"weights: see the release page\n", "a text file"),
    "html pth": (".pth", lambda good: b"\n<!DOCTYPE html>\n<html><body>Sign in</body></html>", "an HTML page"),
    "random pth": (".pth", lambda good: _random_bytes(), "not a PyTorch or safetensors file"),
    "lfs pointer pth": (".pth", lambda good: LFS_POINTER, "a git-lfs pointer file"),
    "zip not torch": (".pth", lambda good: _zip_of_text(), "a zip archive, not a PyTorch checkpoint"),
    "truncated pth": (".pth", lambda good: good["zip"][: len(good["zip"]) // 2], "truncated"),
    "truncated legacy pth": (".pth", lambda good: good["legacy"][: len(good["legacy"]) // 2], "truncated or damaged"),
    "empty safetensors": (".safetensors", lambda good: b"", "empty (0 bytes)"),
    "lfs pointer safetensors": (".safetensors", lambda good: LFS_POINTER, "a git-lfs pointer file"),
    "truncated safetensors": (
        ".safetensors",
        lambda good: good["safetensors"][: len(good["safetensors"]) // 2],
        "truncated",
    ),
    "random safetensors": (".safetensors", lambda good: _random_bytes(), "not a safetensors file"),
}


class _Evil:
    """Pickled into a checkpoint: a weights-only load must refuse it."""


def _good_bytes(checkpoint: Path, tmp: Path) -> dict[str, bytes]:
    state = read_state_dict(checkpoint)
    torch.save({"model": state}, tmp / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "good.safetensors"))
    return {
        "zip": checkpoint.read_bytes(),
        "legacy": (tmp / "legacy.pth").read_bytes(),
        "safetensors": (tmp / "good.safetensors").read_bytes(),
    }


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    """name -> (load(path), folder the message must name (None: the trainer's base file), error type, good bytes)."""
    root = tmp_path_factory.mktemp("good")
    gd_checkpoint, _ = write_tiny_grounding_dino(root / "gd")
    bert_dir = write_bert_folder(root / "bert", weights=False)
    sam_checkpoint = write_tiny_sam(root / "sam")
    ram_checkpoint = write_tiny_ram(root / "ram")

    def load_ram_beside_tags(path):
        (path.parent / TAG_LIST_FILE).write_text("\n".join(TINY_TAGS), encoding="utf-8")
        (path.parent / THRESHOLDS_FILE).write_text("0.65\n" * len(TINY_TAGS), encoding="utf-8")
        return load_ram(path)

    return {
        "grounding_dino": (
            lambda p: load_grounding_dino(p, bert_dir, config=TINY_GROUNDING_DINO),
            "grounding-dino",
            ModelFileError,
            _good_bytes(gd_checkpoint, root / "gd"),
        ),
        "sam": (load_sam, "sams", ModelFileError, _good_bytes(sam_checkpoint, root / "sam")),
        "ram": (load_ram_beside_tags, "ram", ModelFileError, _good_bytes(ram_checkpoint, root / "ram")),
        "trainer base file": (read_checkpoint, None, BaseCheckpointError, _good_bytes(sam_checkpoint, root / "sam")),
    }


SOURCES = {"grounding-dino": GROUNDING_DINO_FILES["swint_ogc"][2], "sams": SAM_FILES["vit_b"][2], "ram": RAM_PLUS_URL}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("loader", ["grounding_dino", "sam", "ram", "trainer base file"])
def test_unreadable_file_names_the_file_its_problem_and_the_fix(loader, kind, loaders, tmp_path):
    load, folder, error_type, good = loaders[loader]
    suffix, make, looks_like = KINDS[kind]
    path = tmp_path / f"model{suffix}"
    path.write_bytes(make(good))
    with pytest.raises(ValueError) as caught:
        load(path)
    assert type(caught.value) is error_type
    message = str(caught.value)
    assert path.name in message and looks_like in message
    assert "Download" in message
    if folder is not None:
        assert f"models/{folder}" in message and SOURCES[folder] in message
    assert "weights_only" not in message


@pytest.mark.parametrize("loader", ["grounding_dino", "sam", "ram", "trainer base file"])
def test_a_file_with_pickled_code_is_refused_without_suggesting_weights_only_false(loader, loaders, tmp_path):
    load, folder, error_type, _ = loaders[loader]
    path = tmp_path / "pickled.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "hook": _Evil()}, path)
    with pytest.raises(ValueError) as caught:
        load(path)
    assert type(caught.value) is error_type
    message = str(caught.value)
    assert "pickled.pth contains Python code" in message and f"{__name__}._Evil" in message
    assert "could run code on this machine" in message
    assert "weights_only" not in message
    error = caught.value if error_type is ModelFileError else caught.value.__cause__
    assert error.__suppress_context__  # torch's own advice stays out of the traceback too
    if folder is not None:
        assert f"models/{folder}" in message and "official" in message


def test_ram_names_the_file_given_and_where_it_belongs(tmp_path):
    sam_file = write_tiny_sam(tmp_path / "ram", name="sam_vit_b_01ec64.pth")
    with pytest.raises(ValueError) as caught:
        load_ram(sam_file)
    message = str(caught.value)
    assert message.startswith(
        "sam_vit_b_01ec64.pth is not a RAM / RAM++ checkpoint: it looks like a SAM checkpoint "
        "(it belongs in models/sams). Put ram_plus_swin_large_14m.pth"
    )
    assert "models/ram folder" in message and RAM_PLUS_URL in message
    with pytest.raises(FileNotFoundError) as caught:
        load_ram(tmp_path / "ram" / "ram_plus_swin_large_14m.pth")
    assert "models/ram" in str(caught.value) and RAM_PLUS_URL in str(caught.value)


# ---- BLIP-2 folders -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def blip2(tmp_path_factory):
    from realign_testkit.blip2 import write_tiny_blip2

    return write_tiny_blip2(tmp_path_factory.mktemp("blip2"))


def _shard(folder: Path) -> None:
    """Split model.safetensors into two shards and an index, as large hub models are stored."""
    state = load_file(str(folder / "model.safetensors"))
    keys = sorted(state)
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    for name, part in zip(names, halves):
        save_file({k: state[k] for k in part}, str(folder / name), metadata={"format": "pt"})
    weight_map = {k: name for name, part in zip(names, halves) for k in part}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "model.safetensors").unlink()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BLIP2_CASES = {
    # case -> (which folder, its name, how to break it, the broken file, what the message says)
    "pointer weights": (
        "captioner",
        "blip2-opt-2.7b",
        lambda f: (f / "model.safetensors").write_bytes(LFS_POINTER),
        "model.safetensors",
        "a git-lfs pointer file",
    ),
    "0-byte weights": (
        "captioner",
        "blip2-opt-6.7b",
        lambda f: (f / "model.safetensors").write_bytes(b""),
        "model.safetensors",
        "empty (0 bytes)",
    ),
    "truncated weights": (
        "captioner",
        "my-captioner",
        lambda f: _truncate(f / "model.safetensors"),
        "model.safetensors",
        "truncated",
    ),
    "truncated shard": (
        "captioner",
        "my-captioner",
        lambda f: (_shard(f), _truncate(f / "model-00002-of-00002.safetensors")),
        "model-00002-of-00002.safetensors",
        "truncated",
    ),
    "missing shard": (
        "captioner",
        "my-captioner",
        lambda f: (_shard(f), (f / "model-00001-of-00002.safetensors").unlink()),
        "model-00001-of-00002.safetensors",
        "missing",
    ),
    "pointer tokenizer": (
        "captioner",
        "my-captioner",
        lambda f: (f / "tokenizer.json").write_bytes(LFS_POINTER),
        "tokenizer.json",
        "a git-lfs pointer file",
    ),
    "pointer text encoder": (
        "text_encoder",
        "blip2-itm-vit-g",
        lambda f: (f / "model.safetensors").write_bytes(LFS_POINTER),
        "model.safetensors",
        "a git-lfs pointer file",
    ),
}
REPOS = {
    "blip2-opt-2.7b": "Salesforce/blip2-opt-2.7b",
    "blip2-opt-6.7b": "Salesforce/blip2-opt-6.7b",
    "my-captioner": "Salesforce/blip2-opt-2.7b",
    "blip2-itm-vit-g": "Salesforce/blip2-itm-vit-g",
}


@pytest.mark.parametrize("case", list(BLIP2_CASES))
def test_broken_blip2_weights_name_the_folder_the_file_and_how_to_download_again(case, blip2, tmp_path):
    which, name, breaks, broken_file, looks_like = BLIP2_CASES[case]
    folders = {"captioner": blip2[0], "text_encoder": blip2[1]}
    folders[which] = tmp_path / name
    shutil.copytree(blip2[0 if which == "captioner" else 1], folders[which])
    breaks(folders[which])
    with pytest.raises(Blip2FolderError) as caught:
        CaptionReward.from_pretrained(folders["captioner"], folders["text_encoder"], device="cpu")
    message = str(caught.value)
    assert str(folders[which]) in message and f"{broken_file} is {looks_like}" in message
    assert f"run `git lfs pull` in {folders[which]}" in message
    assert f"huggingface-cli download {REPOS[name]} --local-dir {folders[which]}" in message
    assert "SafetensorError" not in message and "deserializing header" not in message


def test_blip2_weights_with_pickled_code_are_refused_without_suggesting_weights_only_false(blip2, tmp_path):
    folder = tmp_path / "blip2-opt-2.7b"
    shutil.copytree(blip2[0], folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save({**state, "hook": _Evil()}, folder / "pytorch_model.bin")
    with pytest.raises(Blip2FolderError) as caught:
        CaptionReward.from_pretrained(folder, blip2[1], device="cpu")
    message = str(caught.value)
    assert f"A .bin weights file in {folder} contains Python code (pickled objects such as {__name__}._Evil)" in message
    assert f"huggingface-cli download Salesforce/blip2-opt-2.7b --local-dir {folder}" in message
    assert "weights_only" not in message and caught.value.__suppress_context__


def test_blip2_folders_without_config_json_are_logged_once_per_set(pack, blip2, tmp_path, monkeypatch, caplog):
    from realign_pack.nodes import caption_reward, model_folders

    root = tmp_path / "blip2"
    shutil.copytree(blip2[0], root / "blip2-ok")
    (root / "blip2-half").mkdir()
    (root / "blip2-half" / "model.safetensors").write_bytes(b"")
    (root / ".cache").mkdir()  # hidden folders (e.g. download caches) are not models
    monkeypatch.setattr(model_folders, "folder_paths_for", lambda name: [str(root)])
    monkeypatch.setattr(model_folders, "_reported", set())
    with caplog.at_level(logging.WARNING, logger="RealignDiff"):
        for _ in range(3):  # each UI refresh lists both inputs
            choices = caption_reward.Blip2RewardLoader.INPUT_TYPES()["required"]["captioner"][0]
        assert choices == ["blip2-ok"]
        skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
        assert skipped == [
            f"[RealignDiff] models/blip2: skipped {root / 'blip2-half'} (no config.json: an incomplete download?)"
        ]
        (root / "blip2-empty").mkdir()
        caption_reward.Blip2RewardLoader.INPUT_TYPES()
        skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
        assert len(skipped) == 2 and "blip2-empty" in skipped[1] and "blip2-half" in skipped[1]
