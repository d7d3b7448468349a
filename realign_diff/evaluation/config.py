"""Every setting of ``evaluation/evaluate.py``, its default and its help text: the one place they live. The
command line is built from :class:`EvalConfig` (``--grid-metric`` for the field ``grid_metric``); tests build an
``EvalConfig`` directly."""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACK_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORKFLOW = "workflows/realigndiff_two_pass.json"  # of the pack, unless the working folder has one
STAGES = ("all", "generate", "score", "report")


class ConfigError(ValueError):
    pass


def _opt(default, help: str, metavar=None, choices=None, many=False):
    kind = {"help": help, "metavar": metavar, "choices": choices, "many": many}
    return (
        field(default_factory=lambda: list(default), metadata=kind) if many else field(default=default, metadata=kind)
    )


@dataclass
class EvalConfig:
    prompts: str = _opt(
        None,
        "Prompt set: .txt (one prompt a line), .jsonl, a JSON list, an MS-COCO captions .json, or TIFA v1.0's "
        "question file (tifa_v1.0_question_answers.json: its captions are the prompts, its questions give TIFA).",
        "FILE",
    )
    output: str = _opt(None, "Evaluation folder: images, records, scores and the report. Run again to resume.", "DIR")
    server: list = _opt(
        ["http://127.0.0.1:8188"],
        "A running ComfyUI (with this pack installed); give it several times to spread the runs over several "
        "servers. (default: http://127.0.0.1:8188)",
        "URL",
        many=True,
    )
    workflow: str = _opt(DEFAULT_WORKFLOW, "Workflow (UI or API format) making a coarse and a realigned image.", "FILE")
    seeds: str = _opt("0", "Seeds of every prompt: a list and ranges, e.g. 0,1,2 or 0-3.", "LIST")
    limit: int = _opt(0, "Evaluate only the first N prompts (0: all).", "N")
    prompt_node: str = _opt("Prompt", "Id or title of the node whose text widget gets the prompt.", "NODE")
    seed_node: str = _opt(
        "Seed", "Id or title (or its start) of the node whose seed is set; none found: every sampler's seed.", "NODE"
    )
    coarse_node: str = _opt("Coarse image", "Id or title of the node giving the coarse IMAGE.", "NODE")
    realigned_node: str = _opt("Realigned image", "Id or title of the node giving the realigned IMAGE.", "NODE")
    captioner: str = _opt(None, "BLIP-2 captioner folder (e.g. blip2-opt-2.7b): the caption reward.", "DIR")
    text_encoder: str = _opt(
        None, "BLIP-2 image-text retrieval folder (blip2-itm-vit-g): the reward's text tower.", "DIR"
    )
    clip: str = _opt(None, "CLIP folder in Hugging Face format (openai/clip-vit-large-patch14): the CLIP score.", "DIR")
    vqa: str = _opt(
        None, "BLIP-2 captioner folder asked TIFA's questions (e.g. blip2-flan-t5-xl). Default: --captioner.", "DIR"
    )
    device: str = _opt("auto", "Device of the scoring models: auto (CUDA when available), cpu, cuda, cuda:1...", "DEV")
    timeout: float = _opt(3600.0, "Seconds one run may take on a server before it counts as failed.", "S")
    stage: str = _opt("all", "What to do: all, or only generate, score, or report.", choices=STAGES)
    grid_metric: str = _opt("caption_reward", "Metric whose gains and losses the grid shows.", "NAME")
    grid_count: int = _opt(
        4, "Prompts shown in the grid for the largest gains, and as many for the largest losses.", "N"
    )
    bootstrap: int = _opt(10_000, "Bootstrap resamples for the 95-percent intervals.", "N")
    progress_bar: bool = _opt(True, "Show progress bars.")

    def seed_list(self) -> list[int]:
        seeds: list[int] = []
        for part in filter(None, (p.strip() for p in str(self.seeds).split(","))):
            match = re.fullmatch(r"(-?\d+)-(-?\d+)", part)
            if match:
                seeds += range(int(match[1]), int(match[2]) + 1)
            elif re.fullmatch(r"-?\d+", part):
                seeds.append(int(part))
            else:
                raise ConfigError(f"--seeds {self.seeds!r}: give seeds as a list and ranges, e.g. 0,1,2 or 0-3")
        if not seeds:
            raise ConfigError("--seeds is empty")
        return list(dict.fromkeys(seeds))

    def workflow_path(self) -> Path:
        path = Path(self.workflow)
        if not path.is_file() and not path.is_absolute() and (PACK_ROOT / path).is_file():
            return PACK_ROOT / path
        if not path.is_file():
            raise ConfigError(f"workflow not found: {path}")
        return path

    def nodes(self) -> dict[str, str]:
        return {
            "prompt": self.prompt_node,
            "seed": self.seed_node,
            "coarse": self.coarse_node,
            "realigned": self.realigned_node,
        }

    def validate(self) -> None:
        if not self.prompts or not self.output:
            raise ConfigError("--prompts and --output are required")
        if not self.server:
            raise ConfigError("give at least one --server")
        if self.text_encoder is None and (self.captioner or self.vqa):
            raise ConfigError("--captioner and --vqa need --text-encoder (the BLIP-2 text tower of the caption reward)")
        self.seed_list()


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        if action.default in (None, []) or action.required:
            return action.help
        return super()._get_help_string(action)


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python evaluation/evaluate.py",
        description="Measure prompt following: run a workflow on a running ComfyUI for every prompt x seed, keep "
        "the coarse and the realigned image, score both offline (caption reward, CLIP score, TIFA, attention inside "
        "the masks) and write the paper's Table I for them.",
        formatter_class=_HelpFormatter,
    )
    for f in dataclasses.fields(EvalConfig):
        meta = f.metadata
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
        kwargs["default"] = None if meta["many"] else f.default
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        if f.type in ("bool", bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif meta["many"]:
            kwargs["action"] = "append"
        else:
            kwargs["type"] = {"int": int, "float": float}.get(f.type, str)
        kwargs["required"] = f.name in ("prompts", "output")
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    return parser


def config_from_args(argv: list[str] | None = None) -> EvalConfig:
    args = {k: v for k, v in vars(build_arg_parser().parse_args(argv)).items() if v is not None}
    return EvalConfig(**args)
