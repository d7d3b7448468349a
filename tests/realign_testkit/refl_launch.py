"""Launching the real trainer CLI on 1 or N CPU processes (torchrun DDP, or Accelerate's FSDP2), and comparing
what two runs trained. Used by the multi-process tests and ``bench/refl_processes.py``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
FSDP_CONFIG = ROOT / "training" / "accelerate" / "fsdp.yaml"


def command(processes: int, args: list[str], engine: str = "ddp", fsdp_config: Path = FSDP_CONFIG) -> list[str]:
    """``python training/refl.py`` for one process; torchrun (DDP) or ``accelerate launch`` with an FSDP config
    (the shipped one unless told; through ``fsdp_on_cpu``, which lets Accelerate shard on gloo) for several."""
    script = str(ROOT / "training" / "refl.py")
    if engine == "fsdp":
        launcher = ["-m", "accelerate.commands.launch", "--config_file", str(fsdp_config)]
        launcher += ["--num_processes", str(processes), "--main_process_port", str(_free_port())]
        return [sys.executable, *launcher, str(Path(__file__).with_name("fsdp_on_cpu.py")), *args]
    if processes == 1:
        return [sys.executable, script, *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        script,
        *args,
    ]


def one_thread_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # one thread: bit-for-bit repeatable sums


def launch(processes: int, args: list[str], engine: str = "ddp", fsdp_config: Path = FSDP_CONFIG, **popen):
    return subprocess.Popen(command(processes, args, engine, fsdp_config), env=one_thread_env(), text=True, **popen)


def run(processes: int, args: list[str], engine: str = "ddp", timeout: float = 900) -> str:
    """The run's log (stdout and stderr); AssertionError with its end unless it exited 0."""
    process = launch(processes, args, engine, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-4000:]
    return out


def worker_pids(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of the launcher's worker processes."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher_pid:
            for item in environ:
                if item.startswith(b"RANK="):
                    found[int(item[5:])] = int(entry.name)
    return found


def kill_one_worker(args: list[str], run_dir: Path, engine: str = "ddp") -> tuple[str, int, float]:
    """Launch a 2-process run, ``kill -9`` its rank 1 once ``checkpoint-1`` is written: (the launcher's output,
    its exit code, the seconds from the kill to its exit)."""
    launcher = launch(2, args, engine, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while not (run_dir / "checkpoint-1").is_dir() and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = worker_pids(launcher.pid)
    assert set(workers) == {0, 1}, "the run ended before a worker could be killed"
    killed_at = time.time()
    os.kill(workers[1], signal.SIGKILL)
    out, _ = launcher.communicate(timeout=120)  # never a hang: the launcher ends the survivor
    return out, launcher.returncode, time.time() - killed_at


def assert_same_training(a: dict, b: dict, base: dict, steps: int) -> None:
    """Two runs of ``steps`` optimizer steps on differently split batches trained the same weights.

    Float sums over a batch of 4 on one process and of 2 + 2 reduced across processes differ in the last bits.
    AdamW moves a weight by up to ~lr per step whatever its gradient's size, so weights whose gradient is ~0 can
    drift apart by up to lr (1e-3) per step; on average the runs stay within 0.1 % of how far training moved
    the weights."""
    assert a.keys() == b.keys()
    keys = sorted(a)
    difference = torch.cat([(a[k].float() - b[k].float()).flatten() for k in keys]).abs()
    moved = torch.cat([(a[k].float() - base[k].float()).flatten() for k in keys if k in base]).abs()
    assert moved.mean() > 1e-4  # the runs did train: equal weights are not equal because nothing moved
    assert difference.max() <= steps * 1e-3, f"largest difference {difference.max()}"
    assert difference.mean() <= 1e-3 * moved.mean(), f"mean difference {difference.mean()} vs {moved.mean()}"


def metrics_rows(path: Path) -> list[list[str]]:
    """metrics.csv rows without the timing column, numbers to 5 significant digits."""
    rows = [row.split(",")[:-1] for row in path.read_text().splitlines()[1:]]
    return [[f"{float(v):.5g}" if v else v for v in row] for row in rows]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
