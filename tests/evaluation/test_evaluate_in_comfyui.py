"""``evaluation/evaluate.py`` against ComfyUI's real HTTP server: 3 prompts x 2 seeds end to end, killed and
resumed, its numbers recomputed independently from the saved images; runs spread over two servers give the same
images; and the errors a user meets (no server, a missing node, a failing run) say what is wrong."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from realign_diff.evaluation.config import EvalConfig
from realign_diff.evaluation.pipeline import evaluate
from realign_diff.evaluation.scoring import load_image
from realign_testkit.evaluation import QUESTIONS, SHARES, write_tifa_questions
from realign_testkit.pack import PACK_ROOT

pytestmark = pytest.mark.comfyui
SCRIPT = PACK_ROOT / "evaluation" / "evaluate.py"


def _args(urls, workflow, prompts, out, models, seeds="0,1") -> list[str]:
    args = ["--workflow", str(workflow), "--prompts", str(prompts), "--output", str(out), "--seeds", seeds]
    args += ["--captioner", str(models["captioner"]), "--text-encoder", str(models["text_encoder"])]
    args += ["--clip", str(models["clip"]), "--device", "cpu", "--bootstrap", "200", "--no-progress-bar"]
    return args + [a for url in urls for a in ("--server", url)]


def _config(*args, **kwargs) -> EvalConfig:
    from realign_diff.evaluation.config import config_from_args

    return config_from_args(_args(*args, **kwargs))


def _kill_after_runs(args: list[str], runs: Path, count: int, log: Path) -> None:
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and len(list(runs.glob("*.json"))) < count:
        time.sleep(0.2)
    assert process.poll() is None, f"the evaluation ended before it could be killed:\n{log.read_text()[-3000:]}"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def _clip_score(model, processor, image: torch.Tensor, text: str) -> float:
    """100 * max(cos, 0) from the transformers model directly (torchmetrics' formula, not its code)."""
    pixels = (image * 255).round().to(torch.uint8).permute(2, 0, 1)
    inputs = processor(text=[text], images=[pixels], return_tensors="pt", padding=True)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=inputs["pixel_values"])
        txt = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    img, txt = (getattr(x, "pooler_output", x) for x in (img, txt))
    return max(100 * torch.nn.functional.cosine_similarity(img, txt).item(), 0.0)


def _independent_scores(rows, out: Path, models: dict) -> None:
    from transformers import CLIPModel, CLIPProcessor

    from realign_diff.evaluation.tifa import Blip2Vqa
    from realign_diff.reward import CaptionReward

    reward = CaptionReward.from_pretrained(models["captioner"], models["text_encoder"], device="cpu")
    vqa = Blip2Vqa(reward)
    clip, processor = CLIPModel.from_pretrained(str(models["clip"])), CLIPProcessor.from_pretrained(str(models["clip"]))
    for row in rows:
        image = load_image(out / row["file"])
        assert float(row["caption_reward"]) == pytest.approx(
            float(reward.score(image[None], row["prompt"]).rewards[0]), abs=1e-4
        )
        assert float(row["clip_score"]) == pytest.approx(_clip_score(clip, processor, image, row["prompt"]), abs=1e-3)
        questions = QUESTIONS[row["prompt"]]
        right = [vqa(image[None].permute(0, 3, 1, 2), q, c)[0] == a for q, c, a in questions]
        assert float(row["tifa"]) == pytest.approx(sum(right) / len(right))
        assert float(row["attention_share"]) == SHARES[row["image"]]


def test_evaluation_is_killed_resumes_and_its_numbers_are_the_metrics(
    eval_server, workflow_file, scoring_models, tmp_path
):
    prompts, out = tmp_path / "tifa_questions.json", tmp_path / "eval"
    write_tifa_questions(prompts)
    args = _args([eval_server.url], workflow_file, prompts, out, scoring_models)
    _kill_after_runs(args, out / "runs", 2, tmp_path / "killed.log")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "runs").glob("*.json")}
    assert 2 <= len(before) < 6

    summary = evaluate(_config([eval_server.url], workflow_file, prompts, out, scoring_models))
    assert summary.runs == 6 and summary.generated == 6 - len(before) and not summary.failed
    for name, (data, mtime) in before.items():  # nothing made twice
        path = out / "runs" / name
        assert (path.read_bytes(), path.stat().st_mtime_ns) == (data, mtime)

    with open(out / "report" / "per_image.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and {r["image"] for r in rows} == {"coarse", "realigned"}
    _independent_scores(rows, out, scoring_models)
    table = (out / "report" / "table.md").read_text(encoding="utf-8")
    for metric, label in (("clip_score", "CLIP score"), ("tifa", "TIFA"), ("attention_share", "inside the masks")):
        line = next(line for line in table.splitlines() if label in line)
        for kind, cell in zip(("coarse", "realigned"), line.split("|")[2:4]):
            per_prompt = {}
            for r in rows:
                if r["image"] == kind:
                    per_prompt.setdefault(r["prompt_id"], []).append(float(r[metric]))
            mean = sum(sum(v) / len(v) for v in per_prompt.values()) / len(per_prompt)
            assert cell.strip().startswith(f"{mean:.4f} ["), (metric, kind, cell)
    assert (out / "report" / "grid.png").stat().st_size > 0

    scores = {p.name: p.stat().st_mtime_ns for p in (out / "scores").glob("*.json")}
    again = evaluate(_config([eval_server.url], workflow_file, prompts, out, scoring_models))
    assert (again.generated, again.scored) == (0, 0)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "scores").glob("*.json")} == scores  # nothing scored twice


def test_runs_spread_over_two_servers_give_the_images_of_one(eval_server, workflow_file, tmp_path):
    from realign_testkit.comfyui import find_comfyui
    from realign_testkit.comfyui_server import ComfyUIServer
    from realign_testkit.evaluation import CHECKPOINT

    base = tmp_path / "second-server"
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / CHECKPOINT).symlink_to(
        eval_server.base_dir / "models" / "checkpoints" / CHECKPOINT
    )
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a green cat on a red sofa\n", encoding="utf-8")

    def generate(urls, out):
        config = EvalConfig(prompts=str(prompts), output=str(out), server=urls, seeds="3,4", stage="generate")
        config.workflow, config.progress_bar = str(workflow_file), False
        assert evaluate(config).generated == 2
        return {p.name: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}

    with ComfyUIServer(find_comfyui()[0], base) as second:
        spread = generate([eval_server.url, second.url], tmp_path / "two")
    assert {r["server"] for r in spread.values()} == {eval_server.url, second.url}  # one run each
    alone = generate([eval_server.url], tmp_path / "one")
    for name, record in spread.items():
        for kind, file in record["images"].items():
            a, b = load_image(tmp_path / "two" / file), load_image(tmp_path / "one" / alone[name]["images"][kind])
            assert torch.equal(a, b), (name, kind)
