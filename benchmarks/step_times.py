"""Wall time of one DPO step and one PPO iteration at the notebooks' default CPU sizes (tiny track).

    .venv/bin/python benchmarks/step_times.py [--repeats 5] [--threads 1]

DPO step: 32 scattered pairs a step (the size notebook 06 uses), then notebook 05's
``DPOConfig.for_track(tiny)`` (96 pairs grouped by prompt: 64 distinct completions); reference
log-probs read from the pairs, as ``train_dpo(policy, None, ...)``: collate, one forward
of the distinct chosen and rejected completions, loss, backward, clip, AdamW step.
PPO iteration: notebook 04's run, ``PPOConfig.for_track(tiny)`` (64 rollouts of
at most 24 tokens, a reward model score, GAE, the configured epochs of minibatches of
32), without the periodic evaluation. Prints the median over ``--repeats``
runs of each, after one warm-up. On a shared machine the figures include
the other processes' load.
"""
from __future__ import annotations

import argparse
import functools
import os
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TQDM_DISABLE", "1")   # no progress bars between the figures

import torch  # noqa: E402

from alignlab.config import select_track  # noqa: E402
from alignlab.pairs import load_pairs, load_prompts  # noqa: E402
from alignlab.dpo import DPOConfig, train_dpo  # noqa: E402
from alignlab.models import PolicyWithValue, RewardModel, frozen_copy, load_policy, load_tokenizer  # noqa: E402
from alignlab.ppo import ModelReward, PPOConfig, train_ppo  # noqa: E402
from alignlab.reference import dpo_loss  # noqa: E402
from calibrate import calibration, machine_line  # noqa: E402


def time_dpo_step(track, pairs, repeats: int, **overrides) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds of one DPO optimizer step (train_dpo with steps=1), ``repeats`` times after a warm-up."""
    tokenizer = load_tokenizer(track)
    policy = load_policy(track)
    config = DPOConfig.for_track(track, steps=1, eval_every=1, pad_token_id=tokenizer.pad_token_id, **overrides)
    loss_fn = functools.partial(dpo_loss, beta=config.beta)
    wall, cpu = [], []
    for i in range(repeats + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        train_dpo(policy, None, pairs, loss_fn, config.__class__(**{**config.__dict__, "seed": i}))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall[1:], cpu[1:]


def time_ppo_iteration(track, prompts, repeats: int) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds of one PPO iteration (rollouts, reward model score, GAE, minibatch epochs) after a warm-up.

    Notebook 04's layout: the value model is a trainable copy of the reward model."""
    tokenizer = load_tokenizer(track)
    ref_model = frozen_copy(load_policy(track))
    reward = ModelReward(RewardModel.from_policy(track).eval())     # untrained head: same cost as a trained one
    policy = PolicyWithValue.from_policy(track, value_from=reward)
    config = PPOConfig.for_track(track, iterations=1)
    wall, cpu = [], []
    for i in range(repeats + 1):                                    # same weights each time: only the cost matters
        t0, c0 = time.perf_counter(), time.process_time()
        train_ppo(policy, ref_model, tokenizer, reward, prompts, PPOConfig(**{**config.__dict__, "seed": i}),
                  evaluate=None, progress=False)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall[1:], cpu[1:]


def _line(name: str, wall: list[float], cpu: list[float]) -> str:
    return (f"{name}: median {statistics.median(wall):.3f} s wall, {statistics.median(cpu):.3f} s CPU "
            f"(wall: {', '.join(f'{t:.2f}' for t in wall)})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    track = select_track("tiny")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {machine_line()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, {track.name} track on {track.device}")
    print(f"calibration (benchmarks/calibrate.py): {json.dumps(calibration())}")
    print(f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores "
          "(wall times grow with other processes' load; CPU time much less)")
    cfg, pairs = DPOConfig.for_track(track), load_pairs("train", track)
    print(_line("DPO step      (notebook 06: batch 32 scattered pairs)",
                *time_dpo_step(track, pairs, a.repeats, batch_size=32, group_by_prompt=False)), flush=True)
    print(_line(f"DPO step      (notebook 05: batch {cfg.batch_size} pairs grouped by prompt)",
                *time_dpo_step(track, pairs, a.repeats)), flush=True)
    pc = PPOConfig.for_track(track)
    print(_line(f"PPO iteration ({pc.batch_size} rollouts x {pc.max_new_tokens} tokens, {pc.ppo_epochs} epochs x "
                f"{pc.batch_size // pc.minibatch_size} minibatches)",
                *time_ppo_iteration(track, load_prompts("train", track), a.repeats)), flush=True)


if __name__ == "__main__":
    main()
