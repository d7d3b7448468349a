"""What a recording says per object: its map over the image, the share inside its mask, overall and per layer
resolution, as heatmaps, JSON and a short text (optionally against another pass's JSON, e.g. the coarse pass)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import torch

from .attention_heatmap import draw_heatmap
from .attention_maps import AttentionRecorder, mass_inside


@dataclass
class MappedObject:
    tag: str
    positions: list[int]  # key indices in the recorded conditioning; empty: the object's words are not in it
    words: list[str] = field(default_factory=list)
    score: float | None = None
    mask: torch.Tensor | None = None  # [H, W]; None: a map without a share (words typed by hand)


def _percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _share(maps: torch.Tensor, mask: torch.Tensor) -> float:
    return round(float(mass_inside(maps, mask)), 4)


def _entry(recorder: AttentionRecorder, row: int, obj: MappedObject, maps: torch.Tensor) -> tuple[dict, torch.Tensor]:
    entry = {"tag": obj.tag, "score": obj.score, "tokens": obj.words, "positions": obj.positions}
    index = recorder.index_of(obj.positions)
    overall = maps[row, index].mean(0)
    if obj.mask is not None:
        entry["mask_area"] = round(float((obj.mask > 0.5).float().mean()), 4)
        entry["inside"] = _share(overall, obj.mask)
        entry["inside_by_resolution"] = {
            f"{w}x{h}": _share(recorder.maps_at((h, w))[row, index].mean(0), obj.mask) for h, w in recorder.resolutions
        }
    return entry, overall


def read_out(
    recorder: AttentionRecorder, objects_per_image: list[list[MappedObject]], images: torch.Tensor, label: str = ""
) -> tuple[torch.Tensor, dict]:
    """Heatmaps [n, H, W, 3] (one per row and object with tokens, else the images themselves) and the JSON data."""
    maps = recorder.maps()
    if images.shape[0] != maps.shape[0]:
        raise ValueError(
            f"{images.shape[0]} images for {maps.shape[0]} recorded latents: connect the image decoded from the "
            "sampler that used this recording's MODEL"
        )
    prefix = f"{label}: " if label else ""
    heatmaps, rows = [], []
    for row in range(maps.shape[0]):
        entries = []
        for obj in objects_per_image[row % len(objects_per_image)] if objects_per_image else []:
            if not obj.positions:
                entries.append({"tag": obj.tag, "score": obj.score, "note": "its words are not in the conditioning"})
                continue
            entry, overall = _entry(recorder, row, obj, maps)
            entries.append(entry)
            score = f" (score {obj.score:g})" if obj.score is not None else ""
            lines = [f"{prefix}{obj.tag}{score}"]
            if "inside" in entry:
                lines.append(f"{_percent(entry['inside'])} inside (mask {_percent(entry['mask_area'])})")
            heatmaps.append(draw_heatmap(images[row], overall, obj.mask, lines))
        rows.append(entries)
    if not heatmaps:
        heatmaps = [draw_heatmap(img, torch.zeros(1, 1), None, [f"{prefix}no object to map"]) for img in images]
    data = {
        "label": label,
        "model_calls": recorder.model_calls,
        "steps": [recorder.start_percent, recorder.end_percent],
        "resolutions": [f"{w}x{h}" for h, w in recorder.resolutions],
        "images": rows,
        "problems": sorted(recorder.problems),
    }
    return torch.stack(heatmaps), data


def summary(data: dict, baseline: dict | None = None) -> str:
    """A few lines per image: each object's share inside its mask (and the baseline's, when given)."""
    name = data["label"] or "this pass"
    before = (baseline.get("label") or "baseline") if baseline else ""
    lines = [
        f"{name}: share of each object's attention inside its mask ({data['model_calls']} model calls, "
        f"layers {', '.join(data['resolutions'])}); even attention would give the mask's area"
    ]
    for index, entries in enumerate(data["images"]):
        if len(data["images"]) > 1:
            lines.append(f"image {index}:")
        reference = (
            {e["tag"]: e for e in baseline["images"][index]} if baseline and index < len(baseline["images"]) else {}
        )
        for e in entries:
            score = f" (score {e['score']:g})" if e.get("score") is not None else ""
            if "note" in e or "inside" not in e:
                lines.append(f"  {e['tag']}{score}: {e.get('note', 'mapped (no mask)')}")
                continue
            text = f"  {e['tag']}{score}: {_percent(e['inside'])} inside (mask covers {_percent(e['mask_area'])})"
            if e["tag"] in reference and "inside" in reference[e["tag"]]:
                delta = 100 * (e["inside"] - reference[e["tag"]]["inside"])
                text += f"; {before} {_percent(reference[e['tag']]['inside'])} ({delta:+.1f} points)"
            per_layer = ", ".join(f"{size} {_percent(v)}" for size, v in e["inside_by_resolution"].items())
            lines.append(f"{text}; by layer size: {per_layer}")
        if not entries:
            lines.append("  no object")
    lines += [f"note: {p}" for p in data["problems"]]
    return "\n".join(lines)


def parse_baseline(text: str) -> dict | None:
    if not text or not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"compare_with must be the json output of another Realign Attention Heatmaps: {error}"
        ) from None
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError("compare_with must be the json output of another Realign Attention Heatmaps node")
    return data
