import json
import os
from pathlib import Path

import pytest

from realign_diff import clip_tokenizer


@pytest.fixture(scope="module")
def built_dir(tmp_path_factory):
    bpe = clip_tokenizer._open_clip_bpe()
    if bpe is None:
        pytest.skip("open-clip-torch is not installed (it ships the CLIP BPE vocabulary)")
    return clip_tokenizer.build_from_open_clip_bpe(bpe, tmp_path_factory.mktemp("clip_tokenizer"))


def test_vocabulary_built_offline_has_clips_49408_tokens(built_dir):
    vocab = json.loads((built_dir / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["a</w>"] == 320


def test_tokenizer_gives_the_real_clip_ids(built_dir):
    tokenizer = clip_tokenizer.load_clip_tokenizer(built_dir)
    assert tokenizer("a red book").input_ids == [49406, 320, 736, 1116, 49407]
    assert tokenizer.model_max_length == 77


def test_built_files_equal_comfyuis_sd1_tokenizer(built_dir):
    comfy = os.environ.get("COMFYUI_PATH")
    if not comfy:
        pytest.skip("COMFYUI_PATH not set: nothing to compare with")
    reference = Path(comfy) / "comfy" / "sd1_tokenizer"
    assert json.loads((built_dir / "vocab.json").read_text("utf-8")) == json.loads(
        (reference / "vocab.json").read_text("utf-8")
    )
    assert (built_dir / "merges.txt").read_text("utf-8").splitlines() == (reference / "merges.txt").read_text(
        "utf-8"
    ).splitlines()


def test_a_folder_without_vocab_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json and merges.txt"):
        clip_tokenizer.find_tokenizer_dir(tmp_path)
