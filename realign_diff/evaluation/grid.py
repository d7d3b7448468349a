"""A picture of where the realignment helped and hurt: the prompts whose realigned image gained most and lost most
on one metric, each as a row "prompt and scores | coarse | realigned" (the seed with the largest change shown)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from .report import Row, per_prompt
from .scoring import METRICS
from .store import Store
from .template import KINDS

THUMB, TEXT_WIDTH, PAD = 192, 300, 8


def _pick(rows: Sequence[Row], metric: str, count: int):
    pairs = per_prompt(rows, metric)
    ranked = sorted(pairs, key=lambda key: pairs[key][1] - pairs[key][0])
    gained = [k for k in reversed(ranked) if pairs[k][1] > pairs[k][0]][:count]
    lost = [k for k in ranked if pairs[k][1] < pairs[k][0]][:count]
    return pairs, gained, lost


def _best_row(rows: Sequence[Row], prompt_id: str, metric: str, sign: int) -> Row:
    own = [r for r in rows if r.prompt_id == prompt_id and all(metric in r.scores.get(k, {}) for k in KINDS)]
    change = lambda r: sign * (r.scores["realigned"][metric] - r.scores["coarse"][metric])  # noqa: E731
    return max(own, key=change)


def gain_loss_grid(store: Store, rows: Sequence[Row], metric: str, count: int):
    """A PIL image, or None when no metric has scores. ``metric`` falls back to the first metric that has some."""
    from PIL import Image, ImageDraw

    if not per_prompt(rows, metric):
        metric = next((m for m in METRICS if per_prompt(rows, m)), None)
        if metric is None:
            return None
    pairs, gained, lost = _pick(rows, metric, count)
    sections = [(f"Gained most on {metric}", gained, 1), (f"Lost most on {metric}", lost, -1)]
    height = PAD + sum(24 + max(len(keys), 1) * (THUMB + PAD) for _, keys, _ in sections)
    canvas = Image.new("RGB", (TEXT_WIDTH + 2 * (THUMB + PAD) + PAD, height), "white")
    draw, y = ImageDraw.Draw(canvas), PAD
    for title, keys, sign in sections:
        draw.text((PAD, y), title + ("" if keys else ": none"), fill="black")
        for column, kind in enumerate(KINDS):
            draw.text((TEXT_WIDTH + column * (THUMB + PAD), y), kind, fill="black")
        y += 24
        for key in keys:
            row = _best_row(rows, key, metric, sign)
            coarse, realigned = pairs[key]
            label = "\n".join(textwrap.wrap(row.prompt, 44)[:8])
            label += f"\n\nmean over seeds: coarse {coarse:.4f}\nrealigned {realigned:.4f} ({realigned - coarse:+.4f})"
            label += f"\nshown: seed {row.seed}"
            draw.multiline_text((PAD, y), label, fill="black")
            for column, kind in enumerate(KINDS):
                with Image.open(store.root / row.files[kind]) as image:
                    thumb = image.convert("RGB")
                scale = THUMB / max(thumb.size)  # small test images grow, large ones shrink
                thumb = thumb.resize((max(1, round(thumb.width * scale)), max(1, round(thumb.height * scale))))
                canvas.paste(thumb, (TEXT_WIDTH + column * (THUMB + PAD), y))
            y += THUMB + PAD
        if not keys:
            y += THUMB + PAD
    return canvas
