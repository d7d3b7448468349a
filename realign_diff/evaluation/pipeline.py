"""``evaluate(config)``: generate (resumable, over one or several ComfyUI servers), score offline, report."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .config import EvalConfig
from .prompt_sets import read_prompt_set
from .report import Row, write_report
from .runs import all_jobs, connect, generate, pending
from .scoring import Scorers, missing_metrics, score_all
from .store import Store, fingerprint

log = logging.getLogger("RealignDiff.evaluation")


@dataclass
class Summary:
    runs: int = 0
    generated: int = 0
    failed: list[dict] = field(default_factory=list)
    scored: int = 0
    report: Path | None = None


def _bar(total: int, desc: str, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with transformers
        tqdm = None
    if tqdm is None or not enabled:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="run", dynamic_ncols=True)


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, text):
        pass

    def close(self):
        pass


def enabled_metrics(config: EvalConfig) -> set[str]:
    enabled = set()
    if config.captioner and config.text_encoder:
        enabled.add("caption_reward")
    if config.clip:
        enabled.add("clip_score")
    if (config.vqa or config.captioner) and config.text_encoder:
        enabled.add("tifa")
    return enabled


def load_scorers(config: EvalConfig, enabled: set[str]) -> Scorers:
    from ..compat.torchvision_ops import ensure_torchvision_importable

    ensure_torchvision_importable()
    import torch

    from ..reward import CaptionReward, default_device
    from .clip_score import ClipScore
    from .tifa import Blip2Vqa

    device = default_device() if config.device == "auto" else torch.device(config.device)
    scorers = Scorers()
    if "caption_reward" in enabled or "tifa" in enabled:
        reward = CaptionReward.from_pretrained(config.captioner or config.vqa, config.text_encoder, device=device)
        scorers.caption_reward = reward if "caption_reward" in enabled else None
        if "tifa" in enabled:
            same = config.vqa is None or config.vqa == config.captioner
            vqa = reward if same else CaptionReward.from_pretrained(config.vqa, config.text_encoder, device=device)
            scorers.vqa = Blip2Vqa(vqa)
    if "clip_score" in enabled:
        scorers.clip = ClipScore.from_pretrained(config.clip, device=device)
    return scorers


def evaluate(config: EvalConfig) -> Summary:
    config.validate()
    prompts = read_prompt_set(config.prompts, config.limit)
    seeds = config.seed_list()
    workflow_path = config.workflow_path()
    workflow_bytes = workflow_path.read_bytes()
    workflow = json.loads(workflow_bytes)
    store = Store(config.output)
    settings = {
        "workflow": str(workflow_path),
        "workflow_sha256": fingerprint(workflow_bytes),
        "prompts_sha256": fingerprint(Path(config.prompts).read_bytes()),
        "nodes": config.nodes(),
        "seeds": seeds,
        "limit": config.limit,
    }
    store.check_settings(settings, ("workflow_sha256", "prompts_sha256", "nodes"))
    jobs = all_jobs(prompts, seeds)
    summary = Summary(runs=len(jobs))

    if config.stage in ("all", "generate"):
        todo = pending(jobs, store)
        if todo:
            clients, template = connect(config.server, workflow, config.nodes(), config.timeout)
            log.info("generating %d of %d runs on %s", len(todo), len(jobs), ", ".join(c.url for c in clients))
            bar = _bar(len(todo), "generate", config.progress_bar)

            def done(record: dict) -> None:
                bar.update(1)
                if record["status"] != "ok":
                    bar.set_postfix_str(f"{record['prompt_id']} seed {record['seed']} failed")

            summary.generated = len(generate(clients, template, todo, store, done))
            bar.close()

    finished = [(job, store.run(job.name)) for job in jobs]
    ok = [(job, record) for job, record in finished if record and record.get("status") == "ok"]
    summary.failed = [
        {"run": job.name, "prompt_id": job.prompt.id, "prompt": job.prompt.text, "seed": job.seed, "error": r["error"]}
        for job, r in finished
        if r and r.get("status") == "failed"
    ]

    if config.stage in ("all", "score"):
        enabled = enabled_metrics(config)
        if not any(p.questions for p in prompts):  # no TIFA questions: no VQA model to load
            enabled.discard("tifa")
        todo = [(j.name, r, j.prompt) for j, r in ok if missing_metrics(store, j.name, r, j.prompt, enabled)]
        if todo:
            scorers = load_scorers(config, enabled)
            bar = _bar(len(todo), "score", config.progress_bar)
            score_all(store, todo, scorers, lambda: bar.update(1))
            bar.close()
            summary.scored = len(todo)

    rows = [Row(j.name, j.prompt.id, j.prompt.text, j.seed, store.scores_of(j.name), r["images"]) for j, r in ok]
    write_report(store, rows, summary.failed, seeds, config.grid_metric, config.grid_count, config.bootstrap)
    summary.report = store.report / "table.md"
    return summary
