"""Measure prompt following: the coarse and the realigned image of every prompt x seed, scored (RealignDiff,
arXiv 2305.19599, Table I: caption reward, CLIP score, TIFA; plus the attention inside the masks).

    python evaluation/evaluate.py --server http://127.0.0.1:8188 --prompts tifa_v1.0_question_answers.json \\
        --seeds 0,1 --output eval/tifa --captioner models/blip2/blip2-flan-t5-xl \\
        --text-encoder models/blip2/blip2-itm-vit-g --clip models/clip_score/clip-vit-large-patch14

ComfyUI runs the workflow (default workflows/realigndiff_two_pass.json) through its HTTP API; the images are then
scored here, offline, from local model folders. Run the same command again to resume. Every flag:
``python evaluation/evaluate.py --help``; the report format: docs/evaluation.md. The work is done by
``realign_diff.evaluation``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a script: make the core importable

from realign_diff.evaluation.config import config_from_args  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    from realign_diff.evaluation.comfy_client import ComfyError
    from realign_diff.evaluation.config import ConfigError
    from realign_diff.evaluation.pipeline import evaluate
    from realign_diff.evaluation.store import SettingsMismatch
    from realign_diff.evaluation.workflow_api import WorkflowError
    from realign_diff.refl.data import DataError

    try:
        summary = evaluate(config)
    except (ComfyError, WorkflowError, ConfigError, DataError, SettingsMismatch, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = f", {len(summary.failed)} failed (report/failed.csv)" if summary.failed else ""
    print(f"done: {summary.runs} runs ({summary.generated} generated now{failed}, {summary.scored} scored now)")
    print(f"report: {summary.report}")
    print(summary.report.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
