"""Token mapping on the real CLIP vocabulary (built offline from open-clip-torch's BPE file)."""

import pytest

from realign_diff import clip_tokenizer
from realign_diff.tokens import conditioning_text, find_phrase, locate_object, split_words, tag_variants
from realign_testkit.clip_stream import END, START, clip_stream
from realign_testkit.clip_stream import word_tokenizer as word_ids


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    try:
        return clip_tokenizer.load_clip_tokenizer(cache_dir=tmp_path_factory.mktemp("clip"))
    except FileNotFoundError as error:
        pytest.skip(str(error))


def stream_of(tokenizer, text):
    return clip_stream(tokenizer, text)


def punctuation(tokenizer):
    return frozenset(i for p in ",.;:!?" for i in tokenizer(p, add_special_tokens=False).input_ids)


def words_at(tokenizer, stream, positions):
    return tokenizer.decode([stream[p] for p in positions]).split()


def test_caption_found_gives_its_content_words(tokenizer):
    stream = stream_of(tokenizer, "a red book and a yellow pen")
    pen = locate_object(stream, "pen", "a yellow pen", word_ids(tokenizer))
    assert pen.matched == "caption"
    assert words_at(tokenizer, stream, pen.positions) == ["yellow", "pen"]


def test_multi_token_words_keep_all_their_tokens(tokenizer):
    text = "a photorealistic watercolor of a hippopotamus"
    stream = stream_of(tokenizer, text)
    assert len(word_ids(tokenizer)("hippopotamus")) > 1  # the case under test
    hippo = locate_object(stream, "hippopotamus", "a photorealistic hippopotamus", word_ids(tokenizer))
    assert hippo.matched == "tag"  # the caption is not in the prompt, the tag is
    assert tokenizer.decode([stream[p] for p in hippo.positions]).replace(" ", "") == "hippopotamus"


def test_repeated_words_bind_to_the_right_object(tokenizer):
    stream = stream_of(tokenizer, "a red book and a red pen")
    ids = word_ids(tokenizer)
    pen = locate_object(stream, "pen", "a red pen", ids)
    book = locate_object(stream, "book", "a red book", ids)
    red = ids("red")[0]
    red_positions = [i for i, t in enumerate(stream) if t == red]
    assert len(red_positions) == 2
    assert red_positions[1] in pen.positions and red_positions[0] not in pen.positions
    assert red_positions[0] in book.positions and red_positions[1] not in book.positions


def test_tag_fallback_finds_every_occurrence_and_plurals(tokenizer):
    stream = stream_of(tokenizer, "two cats on a sofa, cats sleeping")
    cat = locate_object(stream, "cat", "a black cat", word_ids(tokenizer))
    assert cat.matched == "tag"
    assert words_at(tokenizer, stream, cat.positions) == ["cats", "cats"]


def test_punctuation_between_words_does_not_break_a_match(tokenizer):
    stream = stream_of(tokenizer, "a red, shiny book")
    book = locate_object(stream, "book", "red shiny book", word_ids(tokenizer), punctuation(tokenizer))
    assert book.matched == "caption"
    assert words_at(tokenizer, stream, book.positions) == ["red", "shiny", "book"]


def test_objects_past_the_first_chunk_of_a_long_prompt(tokenizer):
    filler = ", ".join(["a beautiful detailed landscape painting"] * 14)
    stream = stream_of(tokenizer, filler + ", and a yellow pen")
    assert len(stream) == 77 * 2
    pen = locate_object(stream, "pen", "a yellow pen", word_ids(tokenizer), punctuation(tokenizer))
    assert pen.positions and min(pen.positions) > 77
    assert all(stream[p] not in (START, END) for p in pen.positions)


def test_an_object_not_in_the_conditioning_is_reported_unmatched(tokenizer):
    stream = stream_of(tokenizer, "a red book")
    banana = locate_object(stream, "banana", "a ripe banana", word_ids(tokenizer))
    assert banana.matched == "" and banana.positions == []


def test_function_words_belong_to_no_object(tokenizer):
    stream = stream_of(tokenizer, "a book and a pen")
    book = locate_object(stream, "book", "a book", word_ids(tokenizer))
    assert words_at(tokenizer, stream, book.positions) == ["book"]


def test_weight_syntax_is_ignored_when_reading_phrases():
    assert split_words("(red:1.3) book,") == ["red", "book"]
    assert split_words("[yellow] pen!") == ["yellow", "pen"]


def test_tag_variants():
    assert tag_variants("box") == ["boxes", "box"]
    assert tag_variants("cherries")[0] == "cherries" and "cherry" in tag_variants("cherries")
    assert tag_variants("bus") == ["buses", "bus"]
    assert tag_variants("dining table") == ["dining tables", "dining table"]
    # irregular plurals, both ways (the forms the offline scorer and the caption check use too)
    assert tag_variants("knife") == ["knives", "knife"]
    assert "knife" in tag_variants("knives")
    assert tag_variants("man") == ["man", "men"] and tag_variants("sheep") == ["sheep"]
    assert {"people", "persons"} <= set(tag_variants("person"))


@pytest.mark.parametrize(
    "tag, text, words",
    [
        ("knife", "two knives on a wooden table", ["knives"]),
        ("person", "three people at a bus stop", ["people"]),
        ("man", "two men playing chess", ["men"]),
        ("knives", "a knife and a fork", ["knife"]),
    ],
)
def test_irregular_plurals_are_found_by_the_patchs_token_map(tokenizer, tag, text, words):
    stream = stream_of(tokenizer, text)
    found = locate_object(stream, tag, tag, word_ids(tokenizer))
    assert found.matched == "tag" and words_at(tokenizer, stream, found.positions) == words


def test_find_phrase_needs_the_words_in_order():
    stream = [1, 5, 6, 2, 5, 7]
    assert find_phrase(stream, [[5], [6]]) == [[[1], [2]]]
    assert find_phrase(stream, [[6], [5]]) == []
    assert find_phrase(stream, [[5], [7]], skippable=frozenset({6, 2})) == [
        [[4], [5]]
    ]  # not from 1: 5 follows the skips
    assert find_phrase([5, 9, 7], [[5], [7]], skippable=frozenset({9})) == [[[0], [2]]]


def test_conditioning_text_appends_captions():
    assert conditioning_text("a red book", ["a yellow pen", " "]) == "a red book, a yellow pen"
    assert conditioning_text("", ["a desk"]) == "a desk"
