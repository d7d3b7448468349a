"""The report of an evaluation: ``per_image.csv`` (every image, every metric), ``failed.csv``, ``table.md`` (each
metric for the coarse and the realigned image and their difference: mean over prompts with a bootstrap 95 %
interval, and the paired sign test over prompts) and ``grid.png`` (the prompts where the realigned image gained and
lost most)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .scoring import LABELS, METRICS
from .stats import bootstrap_interval, sign_test
from .store import Store, write_atomic
from .template import KINDS

CSV_FIELDS = ("run", "prompt_id", "prompt", "seed", "image", "file", *METRICS, "caption")


@dataclass
class Row:
    run: str
    prompt_id: str
    prompt: str
    seed: int
    scores: dict  # kind -> {metric: value}
    files: dict  # kind -> path relative to the output folder


def image_rows(rows: Sequence[Row]) -> list[dict]:
    out = []
    for row in rows:
        for kind in KINDS:
            values = row.scores.get(kind, {})
            entry = {"run": row.run, "prompt_id": row.prompt_id, "prompt": row.prompt, "seed": row.seed}
            entry.update(image=kind, file=row.files[kind], caption=values.get("caption", ""))
            entry.update({m: values.get(m, "") for m in METRICS})
            out.append(entry)
    return out


def _csv(rows: list[dict], fields) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def per_prompt(rows: Sequence[Row], metric: str) -> dict[str, tuple[float, float]]:
    """prompt id -> (coarse, realigned) of ``metric``, each the mean over that prompt's seeds."""
    sums: dict[str, list[float]] = {}
    for row in rows:
        coarse, realigned = (row.scores.get(k, {}).get(metric) for k in KINDS)
        if coarse is None or realigned is None:
            continue
        entry = sums.setdefault(row.prompt_id, [0.0, 0.0, 0])
        entry[0] += float(coarse)
        entry[1] += float(realigned)
        entry[2] += 1
    return {key: (c / n, r / n) for key, (c, r, n) in sums.items()}


def _cell(mean: float, low: float, high: float, signed: bool = False) -> str:
    if math.isnan(mean):
        return "—"
    fmt = "{:+.4f}" if signed else "{:.4f}"
    return f"{fmt.format(mean)} [{fmt.format(low)}, {fmt.format(high)}]"


def table(rows: Sequence[Row], resamples: int = 10_000, seed: int = 0) -> str:
    lines = [
        "| Metric | Coarse | Realigned | Difference | Prompts | Realigned better / worse / tied | Sign test p |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric in METRICS:
        pairs = per_prompt(rows, metric)
        if not pairs:
            continue
        coarse = [c for c, _ in pairs.values()]
        realigned = [r for _, r in pairs.values()]
        diffs = [r - c for c, r in pairs.values()]
        wins, losses, ties, p = sign_test(diffs)
        lines.append(
            f"| {LABELS[metric]} | {_cell(*bootstrap_interval(coarse, resamples, seed))} "
            f"| {_cell(*bootstrap_interval(realigned, resamples, seed))} "
            f"| {_cell(*bootstrap_interval(diffs, resamples, seed), signed=True)} | {len(pairs)} "
            f"| {wins} / {losses} / {ties} | {p:.3g} |"
        )
    return "\n".join(lines)


def markdown(rows: Sequence[Row], failed: Sequence[dict], seeds: Sequence[int], resamples: int = 10_000) -> str:
    images = 2 * len(rows)
    head = [
        "# RealignDiff evaluation",
        "",
        f"{len({r.prompt_id for r in rows})} prompts x {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), "
        f"{images} images. Mean over prompts (each prompt: the mean over its seeds), bootstrap 95 % interval over "
        "prompts in brackets; the sign test pairs each prompt's realigned and coarse means.",
        "",
        "",
    ]
    tail = ["", f"Failed runs: {len(failed)} (see failed.csv)." if failed else "Failed runs: none."]
    return "\n".join(head) + table(rows, resamples) + "\n" + "\n".join(tail) + "\n"


def write_report(
    store: Store, rows: Sequence[Row], failed: Sequence[dict], seeds, grid_metric: str, grid_count: int, resamples: int
) -> None:
    write_atomic(store.report / "per_image.csv", _csv(image_rows(rows), CSV_FIELDS))
    write_atomic(store.report / "failed.csv", _csv(list(failed), ("run", "prompt_id", "prompt", "seed", "error")))
    write_atomic(store.report / "table.md", markdown(rows, failed, seeds, resamples).encode("utf-8"))
    from .grid import gain_loss_grid

    grid = gain_loss_grid(store, rows, grid_metric, grid_count)
    if grid is not None:
        buffer = io.BytesIO()
        grid.save(buffer, format="PNG")
        write_atomic(store.report / "grid.png", buffer.getvalue())
