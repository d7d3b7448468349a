"""Prompts, pairs, the validation split and the resumable sampler."""

import json

import pytest
import torch
from PIL import Image

from realign_diff.refl import data
from realign_diff.refl.data import DataError


def test_prompts_from_txt_jsonl_json_list_and_coco(tmp_path):
    (tmp_path / "p.txt").write_text("a red book\n\n  a  yellow pen \n")
    assert data.read_prompts(tmp_path / "p.txt") == ["a red book", "a yellow pen"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "a cat"}\n{"caption": "a dog"}\n"a cup"\n\n{"text": "a pen"}\n')
    assert data.read_prompts(tmp_path / "p.jsonl") == ["a cat", "a dog", "a cup", "a pen"]
    (tmp_path / "l.json").write_text(json.dumps(["one", {"prompt": "two"}]))
    assert data.read_prompts(tmp_path / "l.json") == ["one", "two"]
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [
            {"image_id": 1, "id": 7, "caption": "A man riding a horse.\n"},
            {"image_id": 1, "id": 8, "caption": "a horse"},
        ],
    }
    (tmp_path / "captions_val2014.json").write_text(json.dumps(coco))
    assert data.read_prompts(tmp_path / "captions_val2014.json") == ["A man riding a horse.", "a horse"]


def test_bad_prompt_files_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="prompts file not found"):
        data.read_prompts(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match="no prompts"):
        data.read_prompts(tmp_path / "empty.txt")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{not json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 is not valid JSON"):
        data.read_prompts(tmp_path / "bad.jsonl")
    (tmp_path / "obj.jsonl").write_text('{"title": "x"}\n')
    with pytest.raises(DataError, match="'prompt', 'caption', 'text'"):
        data.read_prompts(tmp_path / "obj.jsonl")


def _image(path, size=(24, 16), color=(255, 0, 0)):
    Image.new("RGB", size, color).save(path)


def test_pairs_from_folder_metadata_and_coco(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    _image(folder / "a.png")
    (folder / "a.txt").write_text("a red square\n")
    _image(folder / "b.jpg", color=(0, 0, 255))
    (folder / "b.txt").write_text("a blue square")
    assert [(p.image.name, p.caption) for p in data.read_pairs(folder)] == [
        ("a.png", "a red square"),
        ("b.jpg", "a blue square"),
    ]

    (folder / "c.png").write_bytes((folder / "a.png").read_bytes())
    with pytest.raises(DataError, match="no same-named .txt caption, e.g. c.png"):
        data.read_pairs(folder)
    (folder / "metadata.jsonl").write_text('{"file_name": "c.png", "text": "c"}\n')
    assert [(p.image.name, p.caption) for p in data.read_pairs(folder)] == [("c.png", "c")]

    coco = {"images": [{"id": 3, "file_name": "a.png"}], "annotations": [{"image_id": 3, "caption": "red"}]}
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="--pairs-image-root"):
        data.read_pairs(tmp_path / "captions.json")
    pairs = data.read_pairs(tmp_path / "captions.json", image_root=folder)
    assert pairs == [data.Pair(folder / "a.png", "red")]


def test_load_image_is_centre_cropped_and_scaled(tmp_path):
    _image(tmp_path / "x.png", size=(30, 10), color=(255, 0, 0))
    image = data.load_image(tmp_path / "x.png", 8)
    assert image.shape == (3, 8, 8)
    assert torch.allclose(image[0], torch.ones(8, 8)) and torch.allclose(image[1], -torch.ones(8, 8))


def test_validation_split_is_seeded_and_disjoint():
    prompts = [f"p{i}" for i in range(20)]
    train, val = data.split_validation(prompts, 0.25, seed=3)
    assert len(val) == 5 and len(train) == 15 and not set(train) & set(val)
    assert data.split_validation(prompts, 0.25, seed=3) == (train, val)
    assert data.split_validation(prompts, 0.25, seed=4) != (train, val)
    assert data.split_validation(prompts, 0.0, seed=3) == (prompts, [])
    with pytest.raises(DataError, match="leaves no training prompts"):
        data.split_validation(["only"], 0.5, seed=0)


def test_sampler_covers_each_epoch_and_is_a_function_of_the_position():
    sampler = data.EpochSampler(5, seed=1)
    epochs = [[sampler[5 * e + i] for i in range(5)] for e in range(3)]
    assert all(sorted(order) == list(range(5)) for order in epochs)
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
    # any process, in any order, looks up the same item for a position: what sharding and resume rely on
    fresh = data.EpochSampler(5, seed=1)
    assert [fresh[p] for p in (12, 3, 7, 0)] == [epochs[2][2], epochs[0][3], epochs[1][2], epochs[0][0]]
    assert [data.EpochSampler(5, seed=2)[p] for p in range(5)] != epochs[0]
