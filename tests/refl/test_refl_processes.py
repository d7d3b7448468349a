"""The trainer on 2 processes (torchrun, gloo on CPU) through the real CLI and the tiny BLIP-2 reward.

One run on N processes must be one process with an N-times larger batch: the same weights, one writer,
no hang when a worker dies, and an exact resume.
"""

import contextlib
import json
import os
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file

from realign_diff.refl import saving
from realign_testkit.refl import assert_same_run, cli_args
from realign_testkit.refl_launch import assert_same_training, kill_one_worker, launch, metrics_rows, run, worker_pids

STEPS = 3


def _args(tiny_base, prompts_file, blip2_dirs, output, *extra):
    flags = dict(refl_step_min=1, total_batch_size=4, max_steps=STEPS, validation_split=0.25, validation_steps=2)
    flags |= dict(checkpointing_steps=1, checkpoints_total_limit=2, baseline="ema", save_dtype="fp32", seed=5)
    flags |= dict(keep_best=False, tensorboard=False, process_timeout=120)
    return [*cli_args(tiny_base, prompts_file, blip2_dirs, output, **flags), *extra]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_base, blip2_dirs):
    """An uninterrupted run on 2 processes x 2 per micro-batch (x 1 accumulation = 4 per step)."""
    from realign_testkit.refl import write_prompts

    root = tmp_path_factory.mktemp("two")
    prompts = write_prompts(root / "prompts.txt")
    log = run(2, _args(tiny_base, prompts, blip2_dirs, root / "out.safetensors", "--train-batch-size", "2"))
    return root, prompts, log


def test_two_processes_equal_one_process_with_the_whole_batch(two_process_run, tiny_base, blip2_dirs):
    root, prompts, log = two_process_run
    one = run(1, _args(tiny_base, prompts, blip2_dirs, root / "one.safetensors", "--train-batch-size", "4"))
    base = {k: v for k, v in load_file(str(tiny_base)).items()}
    assert_same_training(
        load_file(str(root / "out.safetensors")), load_file(str(root / "one.safetensors")), base, STEPS
    )
    assert metrics_rows(root / "out-run" / "metrics.csv") == metrics_rows(root / "one-run" / "metrics.csv")
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


def test_a_killed_worker_ends_the_run_and_resume_is_exact(two_process_run, tiny_base, blip2_dirs):
    root, prompts, _ = two_process_run
    output, run_dir = root / "killed.safetensors", root / "killed-run"
    args = _args(tiny_base, prompts, blip2_dirs, output, "--train-batch-size", "2")
    out, returncode, seconds = kill_one_worker(args, run_dir)
    print(f"\n[timing] the launcher exited {seconds:.1f} s after the kill")
    assert returncode != 0
    assert seconds < 60
    assert "rank" in out and "1" in out and "-9" in out  # torchrun names the failed rank and its signal
    assert not output.exists()

    resumed = run(2, [*args, "--resume", "latest"])
    assert "resumed from" in resumed
    assert_same_run(root / "out.safetensors", output, root / "out-run", run_dir)


def test_lora_on_two_processes_equals_one_process(tmp_path, tiny_base, blip2_dirs):
    from realign_testkit.refl import write_prompts

    prompts = write_prompts(tmp_path / "prompts.txt")
    lora = ("--lora", "4", "--max-steps", "2", "--checkpointing-steps", "0", "--validation-steps", "0")
    log = run(
        2, [*_args(tiny_base, prompts, blip2_dirs, tmp_path / "two.safetensors", "--train-batch-size", "2"), *lora]
    )
    run(1, [*_args(tiny_base, prompts, blip2_dirs, tmp_path / "one.safetensors", "--train-batch-size", "4"), *lora])
    two, one = load_file(str(tmp_path / "two.safetensors")), load_file(str(tmp_path / "one.safetensors"))
    assert all(k.startswith("lora_unet_") for k in two)
    assert any(two[k].abs().sum() > 0 for k in two if k.endswith("lora_up.weight"))
    assert_same_training(
        two, one, {k: torch.zeros_like(v) for k, v in two.items() if k.endswith("lora_up.weight")}, STEPS
    )
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
    launcher = launch(2, args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    workers = {}
    try:
        deadline = time.time() + 600
        while (
            not (tmp_path / "hung-run" / "checkpoint-1").is_dir() and launcher.poll() is None and time.time() < deadline
        ):
            time.sleep(0.05)
        workers = worker_pids(launcher.pid)
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
