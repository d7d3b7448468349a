"""The trainer end to end on a tiny checkpoint: steps, output file, gradient path, resume, LoRA, errors."""

import json
import logging
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from realign_diff import sd15_keys
from realign_diff.refl import saving
from realign_diff.refl.config import ConfigError
from realign_diff.refl.lora import apply_kohya_lora
from realign_diff.refl.models import BaseCheckpointError, load_base
from realign_diff.refl.trainer import ReFLTrainer, StopTraining, train
from realign_testkit.refl import ToyCaptionScorer, tiny_config


def _is_unet(key):
    return key.startswith(sd15_keys.UNET_PREFIX)


def test_two_steps_change_only_the_unet(tmp_path, tiny_base, prompts_file):
    out = tmp_path / "refl.safetensors"
    config = tiny_config(tiny_base, prompts_file, out, validation_split=0.25, validation_steps=1, keep_best=False)
    result = train(config, ToyCaptionScorer())
    assert result.steps == 2 and result.output == out
    base, trained = load_file(str(tiny_base)), load_file(str(out))
    assert trained.keys() == base.keys()
    changed = [k for k in base if _is_unet(k) and not torch.equal(base[k], trained[k])]
    assert len(changed) > 0.5 * sum(map(_is_unet, base))
    for key in base:
        if not _is_unet(key):
            assert trained[key].dtype == base[key].dtype and torch.equal(trained[key], base[key]), key
        else:
            assert trained[key].dtype == torch.float16
    meta = saving.read_metadata(out)
    settings = json.loads(meta["realign_diff.refl.settings"])
    assert settings["reward_weight"] == 1.0 and settings["base"] == str(tiny_base)
    assert meta["realign_diff.refl.step"] == "2"
    rows = (result.run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,reward_loss,pre_loss,reward,validation_reward")
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]  # step 0: the validation before training
    assert (result.run_dir / "reward_curve.png").stat().st_size > 1000


def test_reward_term_alone_sends_gradient_to_unet_weights(tmp_path, tiny_base, prompts_file):
    config = tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors", pre_loss_weight=0.0)
    trainer = ReFLTrainer(config, ToyCaptionScorer())
    out = trainer.reward_step(["a red book"])
    out.loss.backward()
    grads = [p.grad for p in trainer.unet.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    # the only way back is through the decoded pixels: the rollout ran without gradient
    assert trainer.scorer.calls["reward_terms"] == 1 and trainer.scorer.calls["score"] == 0


def _run(config, stop_at=None):
    """(trainer, written weights or None when stopped at ``stop_at``)."""

    def stop(step):
        if step == stop_at:
            raise StopTraining

    trainer = ReFLTrainer(config, ToyCaptionScorer(), on_step_end=stop)
    try:
        trainer.train()
    except StopTraining:
        return trainer, None
    return trainer, load_file(config.output)


def test_killed_run_resumes_to_the_same_weights(tmp_path, tiny_base, prompts_file):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    from PIL import Image

    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (20, 20), color).save(pairs / f"{i}.png")
        (pairs / f"{i}.txt").write_text(f"square {i}")
    common = dict(
        max_steps=3,
        gradient_accumulation_steps=2,
        checkpointing_steps=1,
        checkpoints_total_limit=1,
        save_dtype="fp32",
        baseline="ema",
        pairs=str(pairs),
        validation_split=0.25,
        validation_steps=2,
        keep_best=False,
        lr_warmup_steps=2,
    )
    first, straight = _run(
        tiny_config(tiny_base, prompts_file, tmp_path / "a.safetensors", run_dir=str(tmp_path / "a"), **common)
    )

    interrupted = tiny_config(
        tiny_base, prompts_file, tmp_path / "b.safetensors", run_dir=str(tmp_path / "b"), **common
    )
    assert _run(interrupted, stop_at=2)[1] is None
    assert [step for step, _ in saving.list_checkpoints(tmp_path / "b")] == [2]  # rotated to the newest one
    assert not (tmp_path / "b.safetensors").exists()
    second, resumed = _run(
        tiny_config(
            tiny_base, prompts_file, tmp_path / "b.safetensors", run_dir=str(tmp_path / "b"), resume="latest", **common
        )
    )
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    # and the run's whole state ends equal, so it would go on identically
    assert first.baseline.value == second.baseline.value is not None
    assert first.samples_seen == second.samples_seen == 3 * 2
    assert first.lr_scheduler.state_dict() == second.lr_scheduler.state_dict()
    rows_a = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    rows_b = (tmp_path / "b" / "metrics.csv").read_text().splitlines()

    def strip(rows):  # drop the timing column
        return [r.rsplit(",", 1)[0] for r in rows]

    assert strip(rows_a) == strip(rows_b)


def test_lora_file_holds_only_kohya_keys_that_reproduce_the_trained_unet(tmp_path, tiny_base, prompts_file):
    out = tmp_path / "lora.safetensors"
    config = tiny_config(tiny_base, prompts_file, out, lora=4, lora_alpha=2.0, save_dtype="fp32")
    trainer = ReFLTrainer(config, ToyCaptionScorer())
    trainer.train()
    lora = load_file(str(out))
    assert lora and all(k.startswith("lora_unet_") for k in lora)
    assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in lora)
    assert any(lora[k].abs().sum() > 0 for k in lora if k.endswith("lora_up.weight"))  # trained away from zero
    assert lora[next(k for k in lora if k.endswith(".alpha"))].item() == 2.0
    assert saving.read_metadata(out)["ss_network_dim"] == "4"
    x = torch.randn(1, 4, 8, 8)
    cond = torch.randn(1, 77, 32)
    with torch.no_grad():
        expected = trainer.unet(x, 500, encoder_hidden_states=cond).sample
        trainer.lora.remove()
        # the base UNet weights were never touched; merging the file the way LoraLoader does gives the trained model
        plain = {k: v.clone() for k, v in trainer.unet.state_dict().items()}
        base = load_base(str(tiny_base)).unet.state_dict()
        assert plain.keys() == base.keys() and all(torch.equal(v, base[k]) for k, v in plain.items())
        trainer.unet.load_state_dict(apply_kohya_lora(plain, lora))
        merged = trainer.unet(x, 500, encoder_hidden_states=cond).sample
    assert torch.allclose(merged, expected, atol=1e-4)


def test_non_finite_loss_skips_the_step_and_says_so(tmp_path, tiny_base, prompts_file, caplog):
    config = tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors", max_steps=1)
    trainer = ReFLTrainer(config, ToyCaptionScorer(nan=True))
    before = {k: v.clone() for k, v in trainer.unet.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="realign_diff.refl"):
        metrics = trainer.optimizer_step()
    assert metrics["skipped"] == 1
    assert "step 1 skipped on every process: non-finite reward loss" in caplog.text
    assert all(torch.equal(v, before[k]) for k, v in trainer.unet.state_dict().items())


def test_bad_inputs_give_clear_errors(tmp_path, tiny_base, prompts_file):
    scorer = ToyCaptionScorer()
    with pytest.raises(FileNotFoundError, match="prompts file not found"):
        ReFLTrainer(tiny_config(tiny_base, tmp_path / "missing.txt", tmp_path / "o.safetensors"), scorer)
    with pytest.raises(ConfigError, match="would overwrite the base checkpoint"):
        ReFLTrainer(tiny_config(tiny_base, prompts_file, tiny_base), scorer)
    with pytest.raises(BaseCheckpointError, match="base checkpoint not found"):
        ReFLTrainer(tiny_config(tmp_path / "none.safetensors", prompts_file, tmp_path / "o.safetensors"), scorer)
    sdxl = {k: v for k, v in load_file(str(tiny_base)).items()}
    sdxl["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = torch.ones(4)
    save_file(sdxl, str(tmp_path / "sdxl.safetensors"))
    with pytest.raises(BaseCheckpointError, match="SDXL checkpoint. Expected an SD-1.5"):
        ReFLTrainer(tiny_config(tmp_path / "sdxl.safetensors", prompts_file, tmp_path / "o.safetensors"), scorer)
    with pytest.raises(ConfigError, match="--refl-step-max"):
        ReFLTrainer(tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors", refl_step_max=4), scorer)
    with pytest.raises(ConfigError, match="must end in .safetensors"):
        ReFLTrainer(tiny_config(tiny_base, prompts_file, tmp_path / "o.ckpt"), scorer)
    with pytest.raises(ConfigError, match="multiple of 4"):
        ReFLTrainer(tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors", resolution=18), scorer)
    with pytest.raises(ConfigError, match="--captioner and --text-encoder are required"):
        ReFLTrainer(tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors"))
    with pytest.raises(
        ConfigError, match=r"8 training prompts cannot fill one micro-step of 9 per process x 1 processes"
    ):
        ReFLTrainer(tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors", train_batch_size=9), scorer)
    train(tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors", max_steps=1, checkpointing_steps=1), scorer)
    with pytest.raises(ConfigError, match="trained with other settings: --seed 0 -> 3; --lora 0 -> 2"):
        ReFLTrainer(
            tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors", lora=2, seed=3, resume="latest"), scorer
        )
    with pytest.raises(
        ConfigError,
        match=r"effective batch of 1 \(1 x 1 accumulation x 1 process\(es\)\); this run has 4 "
        r".*Pass --total-batch-size 1 to continue it",
    ):
        ReFLTrainer(
            tiny_config(
                tiny_base, prompts_file, tmp_path / "o.safetensors", gradient_accumulation_steps=4, resume="latest"
            ),
            scorer,
        )


@pytest.mark.parametrize(
    "settings",
    [
        dict(mixed_precision="fp16", frozen_dtype="fp16", gradient_checkpointing=True),  # full UNet, gradient scaler
        dict(mixed_precision="bf16", frozen_dtype="bf16", lora=4),  # frozen base UNet in bf16 under the adapters
    ],
    ids=["fp16-full-checkpointing", "bf16-lora"],
)
def test_mixed_precision_steps_update_the_trained_weights(tmp_path, tiny_base, prompts_file, settings):
    config = tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors", **settings)
    trainer = ReFLTrainer(config, ToyCaptionScorer())
    assert (
        trainer.vae.dtype
        == trainer.text_encoder.dtype
        == getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[settings["frozen_dtype"]])
    )
    before = {k: v.clone() for k, v in trainer.trainable.state_dict().items()}
    metrics = trainer.optimizer_step()
    assert metrics["skipped"] == 0 and torch.isfinite(torch.tensor(metrics["loss"]))
    after = trainer.trainable.state_dict()
    assert all(v.dtype == torch.float32 for v in after.values())  # trained weights stay fp32 masters
    assert any(not torch.equal(before[k], after[k]) for k in after)


def test_early_stopping_writes_the_best_validated_weights(tmp_path, tiny_base, prompts_file):
    out = tmp_path / "best.safetensors"
    config = tiny_config(
        tiny_base,
        prompts_file,
        out,
        max_steps=5,
        validation_split=0.25,
        validation_steps=1,
        early_stopping_patience=2,
        keep_best=True,
        checkpointing_steps=1,
        checkpoints_total_limit=0,
        save_dtype="fp32",
    )
    trainer = ReFLTrainer(config, ToyCaptionScorer())
    scores = iter([0.5, 0.6, 0.9, 0.2, 0.3])  # before training, then after steps 1, 2, 3, 4
    trainer.validate = lambda: next(scores)
    result = trainer.train()
    assert result.stopped_early and result.steps == 4
    assert (result.best_step, result.best_validation_reward) == (2, 0.9)
    step2 = load_file(str(result.run_dir / "checkpoint-2" / "trainable.safetensors"))
    expected = saving.unet_to_checkpoint_tensors(step2, trainer.unet_config, torch.float32)
    written = load_file(str(out))
    assert all(torch.equal(written[k], v) for k, v in expected.items())
    assert saving.read_metadata(out)["realign_diff.refl.step"] == "2"
    assert saving.read_metadata(out)["realign_diff.refl.best_validation_reward"] == "0.900000"


def test_micro_batch_whose_captions_are_all_empty_contributes_no_gradient_but_trains_on(
    tmp_path, tiny_base, prompts_file
):
    class EmptyCaptions(ToyCaptionScorer):
        def reward_terms(self, pixels, prompts, **kwargs):
            terms = super().reward_terms(pixels, prompts, **kwargs)
            terms.captions = [""] * len(terms.captions)
            terms.log_p_caption = torch.zeros(
                pixels.shape[0]
            )  # what a real scorer returns for empty captions: no graph
            return terms

    trainer = ReFLTrainer(
        tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors", max_steps=1), EmptyCaptions()
    )
    metrics = trainer.optimizer_step()
    assert metrics["skipped"] == 0 and metrics["pre_loss"] > 0  # L_pre still trained the step


def test_a_best_found_after_the_last_checkpoint_of_a_killed_run_does_not_leak_into_the_resumed_run(
    tmp_path, tiny_base, prompts_file
):
    common = dict(
        max_steps=3,
        validation_split=0.25,
        validation_steps=1,
        checkpointing_steps=2,
        keep_best=True,
        save_dtype="fp32",
        run_dir=str(tmp_path / "run"),
        early_stopping_patience=0,
    )
    out = tmp_path / "out.safetensors"

    def stop_at_3(step):
        if step == 3:
            raise StopTraining  # killed after step 3's validation found a new best, before any checkpoint-3

    killed = ReFLTrainer(tiny_config(tiny_base, prompts_file, out, **common), ToyCaptionScorer(), on_step_end=stop_at_3)
    scores = iter([0.1, 0.5, 0.6, 0.9])  # before training, then after steps 1, 2, 3
    killed.validate = lambda: next(scores)
    with pytest.raises(StopTraining):
        killed.train()
    best = tmp_path / "run" / "best"
    assert sorted(p.name for p in best.iterdir()) == ["trainable-2.safetensors", "trainable-3.safetensors"]

    resumed = ReFLTrainer(tiny_config(tiny_base, prompts_file, out, resume="latest", **common), ToyCaptionScorer())
    assert sorted(p.name for p in best.iterdir()) == ["trainable-2.safetensors"]  # step 3's was the killed run's
    resumed.validate = lambda: 0.4  # this time step 3 is no better
    result = resumed.train()
    assert (result.best_step, result.best_validation_reward) == (2, 0.6)
    step2 = load_file(str(tmp_path / "run" / "checkpoint-2" / "trainable.safetensors"))
    expected = saving.unet_to_checkpoint_tensors(step2, resumed.unet_config, torch.float32)
    written = load_file(str(out))
    assert all(torch.equal(written[k], v) for k, v in expected.items())
    assert saving.read_metadata(out)["realign_diff.refl.step"] == "2"


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_writes(tmp_path, tiny_base, prompts_file):
    config = tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors", max_steps=1)
    first = ReFLTrainer(config, ToyCaptionScorer())
    with pytest.raises(ConfigError, match=rf"another training run \(process {os.getpid()}\) is writing to .*o-run"):
        ReFLTrainer(tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors", max_steps=1), ToyCaptionScorer())
    first.train()  # the first one ends, and the folder is free again
    train(
        tiny_config(
            tiny_base, prompts_file, tmp_path / "o.safetensors", max_steps=2, resume="latest", checkpointing_steps=1
        ),
        ToyCaptionScorer(),
    )


def test_resume_on_another_process_count_says_what_changes():
    from realign_diff.refl.config import TrainConfig
    from realign_diff.refl.resume import check_resumable, run_facts

    config = TrainConfig(base="b", prompts="p", output="o.safetensors", train_batch_size=2, total_batch_size=8)
    state = {"samples_seen": 16, "config": config.to_json(), "run": json.dumps(run_facts(config.batch_plan(2)))}
    assert check_resumable(state, config, config.batch_plan(2), "ckpt", False) == []
    notes = check_resumable(state, config, config.batch_plan(4), "ckpt", False)
    assert len(notes) == 1 and "resuming a run of 2 process(es) x 2 per micro-batch on 4 x 2" in notes[0]
    assert "effective batch stays 8" in notes[0] and "not bit-identical" in notes[0]


def test_sampled_captions_are_drawn_per_sample_and_step(tmp_path, tiny_base, prompts_file):
    class Recording(ToyCaptionScorer):
        def reward_terms(self, pixels, prompts, **kwargs):
            self.seen = kwargs
            return super().reward_terms(pixels, prompts, **kwargs)

    config = tiny_config(tiny_base, prompts_file, tmp_path / "o.safetensors", caption_sampling=True)
    trainer = ReFLTrainer(config, Recording())
    first = trainer.reward_step(["a red book", "two small dogs"], samples=[4, 5], step=2)
    seeds = trainer.scorer.seen["seeds"]
    assert trainer.scorer.seen["sampling"] is True and len(set(seeds)) == 2
    # the second sample alone, as another process would draw it: the same seed, the same caption
    alone = trainer.reward_step(["two small dogs"], samples=[5], step=2)
    assert trainer.scorer.seen["seeds"] == seeds[1:] and alone.captions == first.captions[1:]
    trainer.reward_step(["two small dogs"], samples=[5], step=3)
    assert trainer.scorer.seen["seeds"] != seeds[1:]  # the next step draws anew
