"""The patch's token map on ComfyUI's own SDXL (CLIP-L + CLIP-G) and SD 2.x (OpenCLIP) tokenizers, as shipped
inside the ComfyUI checkout: multi-token words, repeated words, prompts of several 77-token chunks."""

import pytest
import torch

from realign_testkit.pack import load_pack

pytestmark = pytest.mark.comfyui
load_pack()


@pytest.fixture(scope="module", params=["sdxl", "sd2"])
def tokenizer(request, comfyui):
    """(ComfyUI's tokenizer for the family, its per-encoder tokenizers)."""
    import comfy.sdxl_clip
    import comfy.text_encoders.sd2_clip

    if request.param == "sdxl":
        whole = comfy.sdxl_clip.SDXLTokenizer()
        return whole, [whole.clip_g, whole.clip_l]
    whole = comfy.text_encoders.sd2_clip.SD2Tokenizer()
    return whole, [whole.clip_h]


def located(tokenizer, text, tag, caption, others=frozenset()):
    from realign_pack.nodes.patch_families import token_stream, word_tokenizer
    from realign_pack.realign_diff.tokens import PUNCTUATION_MARKS, locate_object

    whole, parts = tokenizer
    stream = token_stream(whole.tokenize_with_weights(text))
    word = word_tokenizer(parts[0])
    skippable = frozenset(i for p in PUNCTUATION_MARKS for i in word(p))
    return stream, locate_object(stream, tag, caption, word, skippable, others)


def words(tokenizer, stream, positions):
    whole, parts = tokenizer
    vocab = {i: w for w, i in parts[0].tokenizer.get_vocab().items()}
    return "".join(vocab[stream[p]] for p in positions).replace("</w>", " ").split()


def test_the_encoders_of_one_family_agree_on_every_word_and_differ_only_in_padding(tokenizer):
    from realign_pack.nodes.patch_families import CLIP_END, token_stream

    whole, parts = tokenizer
    tokens = whole.tokenize_with_weights("a red book and a yellow pen")
    for chunks in tokens.values():
        ids = [t[0] for t in chunks[0]]
        assert len(ids) == 77 and ids[ids.index(CLIP_END) + 1 :] and ids.count(CLIP_END) >= 1
    if len(tokens) == 2:  # SDXL: CLIP-L pads with the end token, CLIP-G with 0 ('!' in the vocabulary)
        assert [t[0] for t in tokens["l"][0]][-1] == CLIP_END and [t[0] for t in tokens["g"][0]][-1] == 0
    stream = token_stream(tokens)
    assert len(stream) == 77 and stream[-1] is None and CLIP_END in stream


def test_multi_token_words_keep_all_their_tokens(tokenizer):
    stream, hippo = located(tokenizer, "a photorealistic watercolor of a hippopotamus", "hippopotamus", "hippopotamus")
    assert len(hippo.positions) > 1  # BPE splits it
    assert words(tokenizer, stream, hippo.positions) == ["hippopotamus"]


def test_repeated_words_bind_to_the_right_object(tokenizer):
    text = "a red book on a red table, a red book"
    stream, book = located(tokenizer, text, "book", "a red book", frozenset({"table"}))
    assert words(tokenizer, stream, book.positions) == ["red", "book", "red", "book"]
    _, table = located(tokenizer, text, "table", "a red table", frozenset({"book"}))
    assert words(tokenizer, stream, table.positions) == ["red", "table"]


def test_objects_of_a_long_prompt_are_found_in_later_chunks(tokenizer):
    filler = ", ".join(["a beautiful detailed landscape painting"] * 14)
    stream, pen = located(tokenizer, f"{filler}, a yellow pen", "pen", "a yellow pen")
    assert len(stream) == 154
    assert min(pen.positions) > 77 and words(tokenizer, stream, pen.positions) == ["yellow", "pen"]
    assert stream[77] == 49406  # the second chunk starts with its own start token


def test_the_patch_plan_on_these_tokenizers_matches_the_encoded_length(tokenizer):
    from realign_pack.nodes.patch_families import token_stream, word_tokenizer
    from realign_pack.realign_diff.guidance import GuidedObject, RealignGuidance
    from realign_pack.realign_diff.patch_plan import plan_patch

    whole, parts = tokenizer
    mask = torch.zeros(8, 8)
    mask[:, :4] = 1
    guidance = [RealignGuidance("a red book", 8, 8, [GuidedObject("pen", 2.0, "a yellow pen", mask)])]
    plan = plan_patch(guidance, lambda t: token_stream(whole.tokenize_with_weights(t)), word_tokenizer(parts[0]))
    assert plan.text == "a red book, a yellow pen"
    assert words(tokenizer, plan.stream, plan.objects_per_image[0][0].positions.tolist()) == ["yellow", "pen"]
    assert plan.prompt_length == 77
