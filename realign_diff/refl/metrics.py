"""Training metrics: ``metrics.csv`` always, TensorBoard when installed, and a reward-curve PNG."""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

COLUMNS = [
    "step",
    "loss",
    "reward_loss",
    "pre_loss",
    "reward",
    "validation_reward",
    "lr",
    "grad_norm",
    "skipped",
    "seconds",
]


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class MetricsLogger:
    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "metrics.csv"
        self.rows: list[dict] = []
        if resume_step is not None and self.csv_path.is_file():
            with self.csv_path.open(newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        # a resumed run drops the rows after its checkpoint; rewritten beside and renamed, so a kill loses none
        tmp = self.csv_path.with_name(f".{self.csv_path.name}.tmp-{os.getpid()}")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.csv_path)
        self.writer = None
        if tensorboard and tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=resume_step)

    def log(self, step: int, values: dict) -> None:
        row = {k: _fmt(values.get(k, "")) for k in COLUMNS}
        row["step"] = step
        self.rows.append(row)
        with self.csv_path.open("a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value) and key != "step":
                    self.writer.add_scalar(f"refl/{key}", value, step)

    def series(self, column: str) -> tuple[list[int], list[float]]:
        steps, values = [], []
        for row in self.rows:
            if row.get(column) not in ("", None):
                steps.append(int(row["step"]))
                values.append(float(row[column]))
        return steps, values

    def plot_reward_curve(self, path: str | Path | None = None) -> Path | None:
        """Training reward (raw and smoothed) and validation reward against the step; None without matplotlib."""
        if importlib.util.find_spec("matplotlib") is None:
            log.info("matplotlib is not installed: no reward-curve PNG")
            return None
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        path = Path(path) if path else self.run_dir / "reward_curve.png"
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        steps, rewards = self.series("reward")
        if steps:
            ax.plot(steps, rewards, color="tab:blue", alpha=0.3, label="training reward")
            ax.plot(steps, _smooth(rewards), color="tab:blue", label="training reward (smoothed)")
        vsteps, vrewards = self.series("validation_reward")
        if vsteps:
            ax.plot(vsteps, vrewards, "o-", color="tab:orange", label="validation reward")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("caption reward R_cap")
        ax.grid(alpha=0.3)
        if steps or vsteps:
            ax.legend(loc="best")
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(path)
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class NoMetrics:
    """What the processes other than the main one log to: nothing (one writer per run folder)."""

    def log(self, step: int, values: dict) -> None:
        pass

    def plot_reward_curve(self, path=None) -> None:
        return None

    def close(self) -> None:
        pass


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _smooth(values: list[float], window: int = 10) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
