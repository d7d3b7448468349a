"""``kill -9`` of the real CLI process mid-run, then ``--resume latest``: same weights as a run never killed."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from realign_diff.refl import saving
from realign_testkit.refl import assert_same_run, cli_args
from realign_testkit.refl_launch import command, one_thread_env

STEPS = 4


def _command(tiny_base, prompts_file, blip2_dirs, output, *extra):
    flags = dict(gradient_accumulation_steps=2, max_steps=STEPS, validation_split=0.25, validation_steps=2)
    flags |= dict(checkpointing_steps=1, checkpoints_total_limit=2, lr_warmup_steps=2, save_dtype="fp32", seed=7)
    args = cli_args(tiny_base, prompts_file, blip2_dirs, output, keep_best=False, tensorboard=False, **flags)
    return command(1, [*args, *extra])


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_run_killed_with_sigkill_resumes_to_the_weights_of_an_uninterrupted_run(
    tmp_path, tiny_base, prompts_file, blip2_dirs
):
    straight = subprocess.run(
        _command(tiny_base, prompts_file, blip2_dirs, tmp_path / "a.safetensors"),
        capture_output=True,
        text=True,
        timeout=600,
        env=one_thread_env(),
    )
    assert straight.returncode == 0, straight.stderr[-3000:]

    output, run_dir = tmp_path / "b.safetensors", tmp_path / "b-run"
    victim = subprocess.Popen(
        _command(tiny_base, prompts_file, blip2_dirs, output),
        env=one_thread_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 600
    while not (run_dir / "checkpoint-2").is_dir() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, (
        "the run ended before it could be killed: " + victim.stderr.read()[-2000:]
    )
    assert not output.exists()
    steps = [step for step, _ in saving.list_checkpoints(run_dir)]
    assert steps and 2 <= steps[-1] < STEPS
    # what a kill during a save leaves: a half-written checkpoint folder and a half-written output file
    stale = run_dir / f".checkpoint-{STEPS}.tmp-{_dead_pid()}"
    stale.mkdir()
    (stale / "trainable.safetensors").write_bytes(b"\0" * 1000)
    stale_output = tmp_path / f".b.safetensors.tmp-{_dead_pid()}"
    stale_output.write_bytes(b"\0" * 1000)

    resumed = subprocess.run(
        _command(tiny_base, prompts_file, blip2_dirs, output, "--resume", "latest"),
        capture_output=True,
        text=True,
        timeout=600,
        env=one_thread_env(),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {run_dir / f'checkpoint-{steps[-1]}'} at step {steps[-1]}" in resumed.stderr
    assert not stale.exists() and not stale_output.exists()
    assert_same_run(tmp_path / "a.safetensors", output, tmp_path / "a-run", run_dir)


@pytest.mark.parametrize("killed_between_renames", [True, False])
def test_stale_temporaries_go_and_a_checkpoint_caught_mid_resave_comes_back(tmp_path, killed_between_renames):
    run_dir = tmp_path / "run"
    saving.save_training_checkpoint(run_dir, 3, {"w": torch.ones(2)}, {"global_step": 3})
    dead = _dead_pid()
    if killed_between_renames:  # checkpoint-3 was moved aside, the new one not yet moved in
        os.replace(run_dir / "checkpoint-3", run_dir / f".checkpoint-3.old-{dead}")
    live = run_dir / f".checkpoint-4.tmp-{os.getpid()}"
    live.mkdir()
    (run_dir / f".checkpoint-4.tmp-{dead}").mkdir()
    saving.remove_stale_temporaries(run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(["checkpoint-3", live.name])
    tensors, state = saving.load_training_checkpoint(run_dir / "checkpoint-3")
    assert torch.equal(tensors["w"], torch.ones(2)) and state["global_step"] == 3
