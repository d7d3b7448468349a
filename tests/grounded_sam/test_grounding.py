"""GroundingDINO through groundingdino-py on transformers 5: loading, the BERT compatibility layer,
phrase chunking and box selection, detection on a synthetic image, and every error message."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from realign_diff.dense_captioner import grounding
from realign_diff.dense_captioner.grounding import (
    SWINB,
    SWINT_OGC,
    Detection,
    build_model,
    check_shapes,
    infer_config,
    load_grounding_dino,
    nms_per_phrase,
    plan_captions,
    resized_size,
    select_detections,
)
from realign_diff.dense_captioner.grounding_compat import BertTextEncoder, constructing_with, import_groundingdino
from realign_testkit.grounding import (
    TINY_GROUNDING_DINO,
    VOCAB,
    read_bert_folder,
    tiny_grounding_dino_state_dict,
    write_bert_folder,
)
from realign_testkit.sam import ForwardCounter, write_tiny_sam

# ------------------------------------------------------------------------------------ loading


def test_loader_loads_every_tensor_of_the_checkpoint(tiny_grounding_dino_files, tiny_detector):
    checkpoint, _ = tiny_grounding_dino_files
    saved = torch.load(checkpoint, weights_only=True)["model"]
    loaded = tiny_detector.model.state_dict()
    assert set(saved) == set(loaded)
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key
    assert not any(p.requires_grad for p in tiny_detector.parameters())
    assert not tiny_detector.model.training


def test_module_prefix_and_safetensors_checkpoints_load(tmp_path, tiny_grounding_dino_files):
    from safetensors.torch import save_file

    checkpoint, bert_dir = tiny_grounding_dino_files
    state = torch.load(checkpoint, weights_only=True)["model"]
    prefixed = tmp_path / "prefixed.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, prefixed)
    as_safetensors = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(as_safetensors))
    for path in (prefixed, as_safetensors):
        detector = load_grounding_dino(path, bert_dir, config=TINY_GROUNDING_DINO)
        assert torch.equal(detector.model.feat_map.weight, state["feat_map.weight"])


def test_bert_weights_come_from_the_folder_when_the_checkpoint_has_none(tmp_path, tiny_grounding_dino_files):
    from transformers import BertModel

    checkpoint, bert_dir = tiny_grounding_dino_files
    state = {k: v for k, v in torch.load(checkpoint, weights_only=True)["model"].items() if not k.startswith("bert.")}
    no_bert = tmp_path / "no_bert.pth"
    torch.save({"model": state}, no_bert)
    detector = load_grounding_dino(no_bert, bert_dir, config=TINY_GROUNDING_DINO)
    folder = BertModel.from_pretrained(str(bert_dir), local_files_only=True)
    assert torch.equal(detector.model.bert.embeddings.word_embeddings.weight, folder.embeddings.word_embeddings.weight)
    assert torch.equal(
        detector.model.bert.encoder.layer[1].output.dense.weight, folder.encoder.layer[1].output.dense.weight
    )

    config_only = write_bert_folder(tmp_path / "config-only", weights=False)
    with pytest.raises(ValueError, match="no BERT weights.*model.safetensors"):
        load_grounding_dino(no_bert, config_only, config=TINY_GROUNDING_DINO)


def test_import_does_not_need_the_visualizer_dependencies():
    """cv2, matplotlib, pycocotools and supervision made unimportable: the model still builds."""
    code = textwrap.dedent(
        """
        import sys
        for name in ("cv2", "matplotlib", "pycocotools", "supervision"):
            sys.modules[name] = None  # any import of them raises ImportError
        import realign_diff
        from realign_diff.dense_captioner.grounding_compat import import_groundingdino
        gd = import_groundingdino()
        assert gd.GroundingDINO.__name__ == "GroundingDINO"
        assert "groundingdino.util.visualizer" not in sys.modules
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_our_build_matches_groundingdinos_own_builder():
    """Same modules, keys and shapes as groundingdino's build_groundingdino(SwinT OGC config)."""
    bert_dir = write_bert_folder(_tmp_dir("bert-fidelity"), weights=False)
    tokenizer, bert_config = read_bert_folder(bert_dir)
    gd = import_groundingdino()
    from transformers import BertModel

    with torch.device("meta"):
        ours = build_model(SWINT_OGC, tokenizer, bert_config).state_dict()
    with constructing_with(gd, tokenizer, BertModel(bert_config)):
        theirs = gd.build_groundingdino(SWINT_OGC.namespace()).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def test_swinb_backbone_matches_groundingdinos_table(tmp_path):
    import_groundingdino()
    from groundingdino.models.GroundingDINO.backbone.swin_transformer import build_swin_transformer

    theirs = build_swin_transformer("swin_B_384_22k", pretrain_img_size=384, out_indices=(1, 2, 3)).state_dict()
    tokenizer, bert_config = read_bert_folder(write_bert_folder(tmp_path / "bert", weights=False))
    with torch.device("meta"):
        ours = build_model(SWINB, tokenizer, bert_config).backbone[0].state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def _tmp_dir(name):
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix=name))


# --------------------------------------------------------------------------- transformers 5 BERT


def test_bert_text_encoder_equals_transformers_bert_with_a_plain_mask():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    ).eval()
    ids = torch.randint(5, 50, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        expected = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = BertTextEncoder(bert)(input_ids=ids, attention_mask=mask)["last_hidden_state"]
    torch.testing.assert_close(ours[0], expected[0])
    torch.testing.assert_close(ours[1, :5], expected[1, :5])


def test_bert_text_encoder_keeps_groundingdinos_phrases_apart():
    """GroundingDINO's [B, L, L] block mask + restarted positions: each phrase is encoded as if alone."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    ).eval()
    ids = torch.tensor([[2, 11, 12, 5, 13, 5, 3]])  # [CLS] red book . pen . [SEP]
    blocks = [(0, 1), (1, 4), (4, 6), (6, 7)]
    mask = torch.zeros(1, 7, 7, dtype=torch.bool)
    positions = torch.zeros(1, 7, dtype=torch.long)
    for start, end in blocks:
        mask[0, start:end, start:end] = True
        positions[0, start:end] = torch.arange(end - start)
    with torch.no_grad():
        ours = BertTextEncoder(bert)(input_ids=ids, attention_mask=mask, position_ids=positions)["last_hidden_state"]
        for start, end in blocks:
            alone = bert(input_ids=ids[:, start:end]).last_hidden_state
            torch.testing.assert_close(ours[:, start:end], alone)


def test_the_bert_path_runs_inside_the_detector(tiny_detector):
    """The text branch of the real model on transformers 5: per-token features, finite."""
    tokenizer = tiny_detector.tokenizer
    tokens = tokenizer(["red book . pen ."], return_tensors="pt")
    with torch.no_grad():
        out = tiny_detector.model.bert(**tokens)
    assert out["last_hidden_state"].shape == (1, tokens["input_ids"].shape[1], 32)
    assert torch.isfinite(out["last_hidden_state"]).all()


# ------------------------------------------------------------------------------ configurations


def _meta_state(config, bert_dir):
    tokenizer, bert_config = read_bert_folder(bert_dir)
    with torch.device("meta"):
        return build_model(config, tokenizer, bert_config)


def test_auto_config_tells_swint_from_swinb_by_backbone_width(tmp_path):
    bert_dir = write_bert_folder(tmp_path / "bert", bert_config_overrides={}, weights=False)  # bert-base sizes
    assert infer_config(_meta_state(SWINT_OGC, bert_dir).state_dict()) is SWINT_OGC
    assert infer_config(_meta_state(SWINB, bert_dir).state_dict()) is SWINB
    with pytest.raises(ValueError, match="width 32.*groundingdino_swint_ogc.pth.*groundingdino_swinb_cogcoor.pth"):
        infer_config({"backbone.0.patch_embed.proj.weight": torch.empty(32, 3, 4, 4)})


def test_a_swinb_checkpoint_with_the_swint_config_says_which_config_fits(tmp_path):
    bert_dir = write_bert_folder(tmp_path / "bert", weights=False)
    swint_model = _meta_state(SWINT_OGC, bert_dir)
    swinb_state = _meta_state(SWINB, bert_dir).state_dict()
    with pytest.raises(ValueError, match=r"does not match the 'swint_ogc' config.*It is a swinb checkpoint"):
        check_shapes(swint_model, swinb_state, SWINT_OGC)
    check_shapes(swint_model, _meta_state(SWINT_OGC, bert_dir).state_dict(), SWINT_OGC)  # matching: no error


def test_wrong_config_for_the_file_is_a_clear_error(tiny_grounding_dino_files):
    checkpoint, bert_dir = tiny_grounding_dino_files
    with pytest.raises(ValueError, match="does not match the 'swint_ogc' config"):
        load_grounding_dino(checkpoint, bert_dir, config="swint_ogc")
    with pytest.raises(ValueError, match="Swin backbone of width 32"):
        load_grounding_dino(checkpoint, bert_dir)  # "auto" knows only the released backbones
    with pytest.raises(ValueError, match="unknown GroundingDINO config 'swin_l'"):
        load_grounding_dino(checkpoint, bert_dir, config="swin_l")


def test_registered_config_is_found_by_auto(monkeypatch, tiny_grounding_dino_files):
    checkpoint, bert_dir = tiny_grounding_dino_files
    monkeypatch.setitem(grounding.CONFIGS, "tiny", TINY_GROUNDING_DINO)
    assert load_grounding_dino(checkpoint, bert_dir).config is TINY_GROUNDING_DINO
    with pytest.raises(ValueError, match="reserved"):
        grounding.register_config(SWINT_OGC.replace("swinb"))
    with pytest.raises(ValueError, match="Swin width of 'swint_ogc'"):
        grounding.register_config(SWINT_OGC.replace("other"))


# --------------------------------------------------------------------------------- error messages


def test_missing_checkpoint_names_folder_file_and_source(tmp_path, tiny_grounding_dino_files):
    _, bert_dir = tiny_grounding_dino_files
    with pytest.raises(FileNotFoundError) as error:
        load_grounding_dino(tmp_path / "groundingdino_swint_ogc.pth", bert_dir)
    message = str(error.value)
    assert "models/grounding-dino" in message
    assert "groundingdino_swint_ogc.pth" in message
    assert "https://github.com/IDEA-Research/GroundingDINO/releases" in message


def test_missing_bert_folder_or_files_name_the_folder_and_source(tmp_path, tiny_grounding_dino_files):
    checkpoint, _ = tiny_grounding_dino_files
    with pytest.raises(FileNotFoundError) as error:
        load_grounding_dino(checkpoint, tmp_path / "nowhere")
    assert "models/bert-base-uncased" in str(error.value)
    assert "huggingface.co/google-bert/bert-base-uncased" in str(error.value)
    half = tmp_path / "half"
    write_bert_folder(half, weights=False)
    (half / "vocab.txt").unlink()
    with pytest.raises(FileNotFoundError, match="lacks vocab.txt.*models/bert-base-uncased"):
        load_grounding_dino(checkpoint, half)


def test_a_sam_file_is_not_taken_for_grounding_dino(tmp_path, tiny_grounding_dino_files):
    _, bert_dir = tiny_grounding_dino_files
    sam_file = write_tiny_sam(tmp_path)
    with pytest.raises(ValueError) as error:
        load_grounding_dino(sam_file, bert_dir)
    message = str(error.value)
    assert "is not a GroundingDINO checkpoint" in message
    assert "SAM checkpoint (it belongs in models/sams)" in message
    assert "groundingdino_swint_ogc.pth" in message


def test_a_truncated_file_is_a_clear_error(tmp_path, tiny_grounding_dino_files):
    _, bert_dir = tiny_grounding_dino_files
    broken = tmp_path / "groundingdino_swint_ogc.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="groundingdino_swint_ogc.pth"):
        load_grounding_dino(broken, bert_dir)


def test_a_bert_config_of_another_model_is_refused(tmp_path, tiny_grounding_dino_files):
    import json

    checkpoint, bert_dir = tiny_grounding_dino_files
    other = tmp_path / "roberta"
    other.mkdir()
    (other / "vocab.txt").write_text((bert_dir / "vocab.txt").read_text())
    (other / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(ValueError, match="'roberta' config"):
        load_grounding_dino(checkpoint, other, config=TINY_GROUNDING_DINO)


# ------------------------------------------------------------------------------ phrases -> captions


def test_captions_are_chunked_to_the_token_limit(tiny_detector):
    tokenizer = tiny_detector.tokenizer
    phrases = ["red book", "yellow pen", "desk", "traffic light", "teddy bear", "cat", "dog", "wooden chair", "sky"]
    chunks = plan_captions(tokenizer, phrases, max_tokens=10)
    assert len(chunks) > 1
    placed = []
    for chunk in chunks:
        ids = tokenizer(chunk.caption)["input_ids"]
        assert len(ids) <= 10
        for index, start, end in chunk.spans:
            assert tokenizer.decode(ids[start:end]) == phrases[index]
            assert tokenizer.convert_ids_to_tokens(ids[end]) == "."
            placed.append(index)
    assert sorted(placed) == list(range(len(phrases)))


def _two_word_tags(count):
    words = [w for w in VOCAB if w.isalpha()]
    return [f"{a} {b}" for a, b in zip(words[:count], words[40 : 40 + count])]


def test_a_long_tag_list_needs_several_captions_at_256_tokens(tiny_detector):
    tokenizer = tiny_detector.tokenizer
    phrases = _two_word_tags(90)  # 90 two-word tags: 3 * 90 + 2 = 272 tokens
    chunks = plan_captions(tokenizer, phrases)
    assert len(chunks) == 2
    assert all(len(tokenizer(c.caption)["input_ids"]) <= grounding.MAX_TEXT_TOKENS for c in chunks)
    assert sorted(i for c in chunks for i, _, _ in c.spans) == list(range(len(phrases)))


def test_phrases_are_normalized_and_deduplicated(tiny_detector):
    chunks = plan_captions(tiny_detector.tokenizer, ["Red  Book", "red book", "pen.", "", " . "])
    assert [c.caption for c in chunks] == ["red book . pen ."]
    assert [index for index, _, _ in chunks[0].spans] == [0, 2]


# ------------------------------------------------------------------------------ boxes from logits


def test_boxes_are_given_to_the_best_phrase_and_thresholded():
    # tokens: 0 [CLS], 1 red, 2 book, 3 ., 4 pen, 5 ., 6 [SEP]
    spans = [(0, 1, 3), (1, 4, 5)]
    probs = torch.zeros(4, 256)
    probs[0, 2] = 0.9  # book
    probs[0, 4] = 0.5  # pen too, less
    probs[1, 4] = 0.3  # pen, below the box threshold
    probs[2, 3] = 0.99  # only a separator: no phrase
    probs[3, 4] = 0.8  # pen, box far outside the image
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.5, 0.5, 0.1, 0.1], [0.5, 0.5, 0.1, 0.1], [1.5, 1.5, 0.2, 0.2]])
    found = select_detections(
        probs, boxes, spans, ["red book", "pen"], 200, 100, box_threshold=0.35, text_threshold=0.25
    )
    assert found == [Detection("red book", pytest.approx((80.0, 30.0, 120.0, 70.0)), pytest.approx(0.9))]


def test_text_threshold_applies_too():
    probs = torch.zeros(1, 256)
    probs[0, 1] = 0.4
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    assert select_detections(probs, boxes, [(0, 1, 2)], ["cat"], 10, 10, box_threshold=0.2, text_threshold=0.45) == []
    assert (
        len(select_detections(probs, boxes, [(0, 1, 2)], ["cat"], 10, 10, box_threshold=0.2, text_threshold=0.3)) == 1
    )


def test_box_threshold_reads_every_text_token_and_text_threshold_the_phrase():
    # as GroundingDINO's own inference: the box passes box_threshold through any token (here the " ." after
    # "cat"), and is given to "cat" because the phrase's own score passes text_threshold
    probs = torch.zeros(1, 256)
    probs[0, 1] = 0.3  # "cat"
    probs[0, 2] = 0.5  # "."
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    (found,) = select_detections(probs, boxes, [(0, 1, 2)], ["cat"], 10, 10, box_threshold=0.4, text_threshold=0.25)
    assert found.phrase == "cat" and found.confidence == pytest.approx(0.3)
    assert select_detections(probs, boxes, [(0, 1, 2)], ["cat"], 10, 10, box_threshold=0.6, text_threshold=0.25) == []


def test_boxes_are_clamped_to_the_image():
    probs = torch.zeros(1, 256)
    probs[0, 1] = 0.9
    (found,) = select_detections(
        probs, torch.tensor([[0.95, 0.05, 0.3, 0.3]]), [(0, 1, 2)], ["cat"], 100, 50, 0.35, 0.25
    )
    assert found.box == pytest.approx((80.0, 0.0, 100.0, 10.0))


def test_nms_runs_per_phrase():
    book_a = Detection("book", (0.0, 0.0, 10.0, 10.0), 0.9)
    book_b = Detection("book", (1.0, 1.0, 10.0, 10.0), 0.8)  # IoU 0.81 with book_a
    book_far = Detection("book", (50.0, 50.0, 60.0, 60.0), 0.5)
    pen_same_place = Detection("pen", (1.0, 1.0, 10.0, 10.0), 0.7)
    kept = nms_per_phrase([book_b, pen_same_place, book_a, book_far], iou_threshold=0.5)
    assert kept == [book_a, pen_same_place, book_far]
    assert len(nms_per_phrase([book_a, book_b], iou_threshold=0.9)) == 2


def test_resize_follows_the_original_rule():
    assert resized_size(480, 640, 800, 1333) == (800, 1066)
    assert resized_size(640, 480, 800, 1333) == (1066, 800)
    assert resized_size(100, 1000, 800, 1333) == (133, 1330)
    assert resized_size(512, 512, 800, 1333) == (800, 800)


# ------------------------------------------------------------------------------ detection end to end


def test_detect_on_a_synthetic_image_gives_well_formed_boxes(tiny_detector, synthetic_image):
    height, width = synthetic_image.shape[:2]
    phrases = ["red book", "yellow pen", "banana"]
    found = tiny_detector.detect(synthetic_image, phrases, box_threshold=0.0, text_threshold=0.0)
    assert found, "random weights with zero thresholds keep boxes"
    assert [d.confidence for d in found] == sorted((d.confidence for d in found), reverse=True)
    for detection in found:
        assert detection.phrase in phrases
        x0, y0, x1, y1 = detection.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert 0.0 <= detection.confidence <= 1.0


def test_nothing_found_is_an_empty_list(tiny_detector, synthetic_image):
    assert tiny_detector.detect(synthetic_image, ["red book"], box_threshold=1.0) == []
    assert tiny_detector.detect(synthetic_image, []) == []
    assert tiny_detector.detect(synthetic_image, ["", " . "]) == []


def test_one_forward_pass_per_caption_chunk(tiny_detector, synthetic_image):
    phrases = _two_word_tags(90)
    with ForwardCounter(tiny_detector.model.backbone) as counter:
        tiny_detector.detect(synthetic_image, phrases, box_threshold=0.0, text_threshold=0.0)
    assert counter.calls == len(plan_captions(tiny_detector.tokenizer, phrases)) == 2


def test_detect_is_deterministic_and_accepts_a_batch_of_one(tiny_detector, synthetic_image):
    a = tiny_detector.detect(synthetic_image, ["cat", "dog"], 0.0, 0.0)
    b = tiny_detector.detect(synthetic_image[None], ["cat", "dog"], 0.0, 0.0)
    assert a == b
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        tiny_detector.detect(torch.rand(2, 8, 8, 3), ["cat"])


def test_state_dict_writer_is_reproducible(tiny_grounding_dino_files):
    _, bert_dir = tiny_grounding_dino_files
    a = tiny_grounding_dino_state_dict(bert_dir, seed=3)
    b = tiny_grounding_dino_state_dict(bert_dir, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)
