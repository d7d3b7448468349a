"""The trainer on 2 processes (torchrun, gloo on CPU) through the real CLI and the tiny BLIP-2 reward.

One run on N processes must be one process with an N-times larger batch: the same weights, one writer,
no hang when a worker dies, and an exact resume.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from realign_diff.refl import saving
from realign_testkit.refl import assert_same_run, cli_args

ROOT = Path(__file__).resolve().parents[2]
STEPS = 3
# Float sums over a batch of 4 on one process and of 2 + 2 all-reduced differ in the last bits. AdamW moves a
# weight by up to ~lr per step whatever its gradient's size, so weights whose gradient is ~0 can drift apart by up
# to lr (1e-3) per step; on average the runs stay within 0.1 % of how far training moved the weights.
MAX_DIFFERENCE, MEAN_DIFFERENCE = STEPS * 1e-3, 1e-3


def _args(tiny_base, prompts_file, blip2_dirs, output, *extra):
    flags = dict(refl_step_min=1, total_batch_size=4, max_steps=STEPS, validation_split=0.25, validation_steps=2)
    flags |= dict(checkpointing_steps=1, checkpoints_total_limit=2, baseline="ema", save_dtype="fp32", seed=5)
    flags |= dict(keep_best=False, tensorboard=False, process_timeout=120)
    return [*cli_args(tiny_base, prompts_file, blip2_dirs, output, **flags), *extra]


def _launch(processes, args, **popen):
    if processes == 1:
        command = [sys.executable, str(ROOT / "training" / "refl.py"), *args]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            str(ROOT / "training" / "refl.py"),
            *args,
        ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # one thread: bit-for-bit repeatable sums
    return subprocess.Popen(command, env=env, text=True, **popen)


def _run(processes, args):
    process = _launch(processes, args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = process.communicate(timeout=900)
    assert process.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_base, blip2_dirs):
    """An uninterrupted run on 2 processes x 2 per micro-batch (x 1 accumulation = 4 per step)."""
    from realign_testkit.refl import write_prompts

    root = tmp_path_factory.mktemp("two")
    prompts = write_prompts(root / "prompts.txt")
    log = _run(2, _args(tiny_base, prompts, blip2_dirs, root / "out.safetensors", "--train-batch-size", "2"))
    return root, prompts, log


def _assert_same_training(a: dict, b: dict, base: dict):
    assert a.keys() == b.keys()
    keys = sorted(a)
    difference = torch.cat([(a[k].float() - b[k].float()).flatten() for k in keys]).abs()
    moved = torch.cat([(a[k].float() - base[k].float()).flatten() for k in keys if k in base]).abs()
    assert moved.mean() > 1e-4  # the runs did train: equal weights are not equal because nothing moved
    assert difference.max() <= MAX_DIFFERENCE, f"largest difference {difference.max()}"
    assert difference.mean() <= MEAN_DIFFERENCE * moved.mean(), f"mean difference {difference.mean()} vs {moved.mean()}"


def _metrics(path: Path) -> list[list[str]]:
    """metrics.csv rows without the timing column, numbers to 5 significant digits."""
    rows = [row.split(",")[:-1] for row in path.read_text().splitlines()[1:]]
    return [[f"{float(v):.5g}" if v else v for v in row] for row in rows]


def test_two_processes_equal_one_process_with_the_whole_batch(two_process_run, tiny_base, blip2_dirs):
    root, prompts, log = two_process_run
    one = _run(1, _args(tiny_base, prompts, blip2_dirs, root / "one.safetensors", "--train-batch-size", "4"))
    base = {k: v for k, v in load_file(str(tiny_base)).items()}
    _assert_same_training(load_file(str(root / "out.safetensors")), load_file(str(root / "one.safetensors")), base)
    assert _metrics(root / "out-run" / "metrics.csv") == _metrics(root / "one-run" / "metrics.csv")
    assert "effective batch = 2 per micro-batch x 1 accumulation x 2 process(es) = 4 per optimizer step" in log
    assert "effective batch = 4 per micro-batch x 1 accumulation x 1 process(es) = 4 per optimizer step" in one
    assert "trained weights identical on all 2 processes" in log
    assert "processes = 2 (MULTI_CPU)" in log


def test_one_writer_one_row_per_step_checkpoints_once(two_process_run):
    root, _, log = two_process_run
    run_dir = root / "out-run"
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3"]  # step 0: the validation before training
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("checkpoint-")) == [
        "metrics.csv",
        "reward_curve.png",
        "settings.json",
    ]
    assert [step for step, _ in saving.list_checkpoints(run_dir)] == [2, 3]
    assert log.count("saved ") == STEPS  # one line per checkpoint: only the main process saves and logs
    assert not [p for p in root.rglob(".*") if saving.TEMPORARY_RE.match(p.name)]
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["run"] == {
        "num_processes": 2,
        "train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "effective_batch_size": 4,
    }


def _workers(launcher_pid: int) -> dict[int, int]:
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


def test_a_killed_worker_ends_the_run_and_resume_is_exact(two_process_run, tiny_base, blip2_dirs):
    root, prompts, _ = two_process_run
    output, run_dir = root / "killed.safetensors", root / "killed-run"
    args = _args(tiny_base, prompts, blip2_dirs, output, "--train-batch-size", "2")
    launcher = _launch(2, args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while not (run_dir / "checkpoint-1").is_dir() and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = _workers(launcher.pid)
    assert set(workers) == {0, 1}, "the run ended before a worker could be killed"
    killed_at = time.time()
    os.kill(workers[1], signal.SIGKILL)
    out, _ = launcher.communicate(timeout=120)  # never a hang: the launcher ends the survivor
    print(f"\n[timing] the launcher exited {time.time() - killed_at:.1f} s after the kill")
    assert launcher.returncode != 0
    assert time.time() - killed_at < 60
    assert "rank" in out and "1" in out and "-9" in out  # torchrun names the failed rank and its signal
    assert not output.exists()

    resumed = _run(2, [*args, "--resume", "latest"])
    assert "resumed from" in resumed
    assert_same_run(root / "out.safetensors", output, root / "out-run", run_dir)


def test_lora_on_two_processes_equals_one_process(tmp_path, tiny_base, blip2_dirs):
    from realign_testkit.refl import write_prompts

    prompts = write_prompts(tmp_path / "prompts.txt")
    lora = ("--lora", "4", "--max-steps", "2", "--checkpointing-steps", "0", "--validation-steps", "0")
    log = _run(
        2, [*_args(tiny_base, prompts, blip2_dirs, tmp_path / "two.safetensors", "--train-batch-size", "2"), *lora]
    )
    _run(1, [*_args(tiny_base, prompts, blip2_dirs, tmp_path / "one.safetensors", "--train-batch-size", "4"), *lora])
    two, one = load_file(str(tmp_path / "two.safetensors")), load_file(str(tmp_path / "one.safetensors"))
    assert all(k.startswith("lora_unet_") for k in two)
    assert any(two[k].abs().sum() > 0 for k in two if k.endswith("lora_up.weight"))
    _assert_same_training(two, one, {k: torch.zeros_like(v) for k, v in two.items() if k.endswith("lora_up.weight")})
    assert "trained weights identical on all 2 processes" in log


def test_a_worker_that_stops_answering_ends_the_run_after_the_timeout(tmp_path, tiny_base, blip2_dirs):
    from realign_testkit.refl import write_prompts

    prompts = write_prompts(tmp_path / "prompts.txt")
    output = tmp_path / "hung.safetensors"
    args = [
        *_args(tiny_base, prompts, blip2_dirs, output, "--train-batch-size", "2", "--max-steps", "20"),
        "--process-timeout",
        "10",
    ]
    launcher = _launch(2, args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    workers = {}
    try:
        deadline = time.time() + 600
        while (
            not (tmp_path / "hung-run" / "checkpoint-1").is_dir() and launcher.poll() is None and time.time() < deadline
        ):
            time.sleep(0.05)
        workers = _workers(launcher.pid)
        assert set(workers) == {0, 1}, "the run ended before a worker could be stopped"
        stopped_at = time.time()
        os.kill(workers[1], signal.SIGSTOP)  # alive but silent, as a worker stuck in a driver would be
        out, _ = launcher.communicate(timeout=180)
    finally:
        for pid in workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.kill()
    print(f"\n[timing] the launcher exited {time.time() - stopped_at:.1f} s after the worker stopped answering")
    assert launcher.returncode != 0
    assert time.time() - stopped_at < 120
    assert "error: process 0 of 2: the other processes did not reach" in out
    assert "--process-timeout 10 s" in out
    assert not output.exists()
