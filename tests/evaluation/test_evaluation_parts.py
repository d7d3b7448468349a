"""The evaluation's pieces on their own: prompt sets, the settings check, the seeds, the attention share reader,
the statistics and the table."""

from __future__ import annotations

import json
import math

import pytest

from realign_diff.evaluation.config import ConfigError, EvalConfig
from realign_diff.evaluation.prompt_sets import read_prompt_set
from realign_diff.evaluation.report import Row, per_prompt, table
from realign_diff.evaluation.stats import bootstrap_interval, sign_test
from realign_diff.evaluation.store import SettingsMismatch, Store
from realign_diff.evaluation.template import attention_shares
from realign_testkit.evaluation import PROMPTS, QUESTIONS, write_tifa_questions


def test_prompt_sets_txt_jsonl_coco_and_tifa(tmp_path):
    (tmp_path / "p.txt").write_text("a red  book\n\n a cat\n", encoding="utf-8")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a red book"}\n{"caption": "a cat"}\n', encoding="utf-8")
    coco = {
        "images": [],
        "annotations": [{"image_id": 1, "caption": "a red book"}, {"image_id": 2, "caption": "a cat"}],
    }
    (tmp_path / "p.json").write_text(json.dumps(coco), encoding="utf-8")
    for name in ("p.txt", "p.jsonl", "p.json"):
        prompts = read_prompt_set(tmp_path / name)
        assert [(p.id, p.text, p.questions) for p in prompts] == [("00000", "a red book", ()), ("00001", "a cat", ())]
    write_tifa_questions(tmp_path / "tifa.json")
    data = json.loads((tmp_path / "tifa.json").read_text())
    (tmp_path / "tifa.json").write_text(json.dumps(data + data[:1]))  # TIFA's file repeats a few questions
    tifa = read_prompt_set(tmp_path / "tifa.json")
    assert [p.text for p in tifa] == PROMPTS and [p.id for p in tifa] == ["t0", "t1", "t2"]
    for prompt in tifa:
        assert [(q.question, list(q.choices), q.answer) for q in prompt.questions] == [
            (q, c, a) for q, c, a in QUESTIONS[prompt.text]
        ]
    assert [p.text for p in read_prompt_set(tmp_path / "tifa.json", limit=2)] == PROMPTS[:2]


def test_seeds_lists_and_ranges():
    assert EvalConfig(prompts="p", output="o", seeds="0,1, 5-7,1").seed_list() == [0, 1, 5, 6, 7]
    with pytest.raises(ConfigError, match="--seeds"):
        EvalConfig(prompts="p", output="o", seeds="one").seed_list()


def test_an_output_folder_refuses_another_workflow(tmp_path):
    store = Store(tmp_path)
    store.check_settings({"workflow_sha256": "a", "prompts_sha256": "b", "seeds": [0]}, ("workflow_sha256",))
    store.check_settings({"workflow_sha256": "a", "prompts_sha256": "b", "seeds": [0, 1]}, ("workflow_sha256",))
    with pytest.raises(SettingsMismatch, match="another workflow_sha256 .*pass another --output"):
        store.check_settings({"workflow_sha256": "c"}, ("workflow_sha256",))


def test_attention_share_read_loosely_from_outputs():
    per_kind = {"12": {"text": [json.dumps({"inside_share": {"coarse": 0.25, "realigned": 0.75}})]}}
    assert attention_shares(per_kind, {}) == {"coarse": 0.25, "realigned": 0.75}
    objects = [[{"tag": "book", "inside": 0.6, "inside_by_resolution": {"8x8": 0.1}}, {"tag": "pen", "inside": 0.4}]]
    heatmaps = {"5": {"text": [json.dumps({"label": "coarse", "images": objects})]}}
    assert attention_shares(heatmaps, {}) == {"coarse": pytest.approx(0.5)}  # the mean over objects
    titled = {"7": {"share": [0.2, 0.4]}}
    assert attention_shares(titled, {"7": {"_meta": {"title": "Coarse maps"}}}) == {"coarse": pytest.approx(0.3)}
    assert attention_shares({"3": {"text": ["Caption reward: mean 0.31"], "images": []}}, {}) == {}


def test_sign_test_is_exact_and_two_sided():
    assert sign_test([1, 2, 3, 4, 5]) == (5, 0, 0, 2 / 32)
    assert sign_test([1, -1, 0]) == (1, 1, 1, 1.0)
    wins, losses, ties, p = sign_test([1] * 8 + [-1] * 2)
    assert (wins, losses, ties) == (8, 2, 0) and p == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert sign_test([]) == (0, 0, 0, 1.0)


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
    values = [0.1, 0.5, 0.2, 0.9, 0.4, 0.3]
    mean, low, high = bootstrap_interval(values, resamples=2000, seed=3)
    assert mean == pytest.approx(sum(values) / 6) and low < mean < high
    assert bootstrap_interval(values, resamples=2000, seed=3) == (mean, low, high)
    assert bootstrap_interval([2.0, 2.0], resamples=50) == (2.0, 2.0, 2.0)
    assert all(math.isnan(v) for v in bootstrap_interval([]))


def _row(prompt_id, seed, coarse, realigned):
    scores = {"coarse": {"clip_score": coarse}, "realigned": {"clip_score": realigned}}
    files = {"coarse": "c.png", "realigned": "r.png"}
    return Row(f"{prompt_id}_s{seed}", prompt_id, "p", seed, scores, files)


def test_table_means_over_seeds_then_prompts_and_counts_wins():
    rows = [_row("a", 0, 10.0, 12.0), _row("a", 1, 20.0, 22.0), _row("b", 0, 30.0, 29.0)]
    assert per_prompt(rows, "clip_score") == {"a": (15.0, 17.0), "b": (30.0, 29.0)}
    line = table(rows, resamples=100).splitlines()[2]
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[0] == "CLIP score (ViT-L/14)"
    assert cells[1].startswith("22.5000 [") and cells[2].startswith("23.0000 [") and cells[3].startswith("+0.5000 [")
    assert cells[4:] == ["2", "1 / 1 / 0", "1"]
    assert "Caption reward" not in table(rows)  # a metric nobody computed has no row
