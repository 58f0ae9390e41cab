"""Gold reward and KL along PPO or DPO runs with chosen settings: the sweeps behind the notebooks' defaults.

    python benchmarks/tuning_sweep.py ppo '[{"kl_coef": 0.07}, {"kl_coef": 0.05, "ppo_epochs": 4}]'
    python benchmarks/tuning_sweep.py ppo-gold '[{"kl_coef": 0.02}]'        # PPO on the gold reward itself
    python benchmarks/tuning_sweep.py dpo '[{"eval_every": 25}]' --eval-prompts 256   # notebook 05's run
    python benchmarks/tuning_sweep.py dpo '[{"beta": 0.1, "lr": 3e-4, "decay": false, "batch_size": 32,
        "group_by_prompt": false, "steps": 200}]' [--threads 1] [--rm-steps 200]   # the paper-style recipe

Each JSON object overrides ``PPOConfig.for_track(tiny)`` or ``DPOConfig.for_track(tiny)``; every run starts
from the base policy. ``ppo`` trains notebook 04's reward model first (``--rm-steps``, its recipe),
normalizes it on reference samples and starts the value model from it, as the notebook does (``--value head``:
a value head on the policy instead, the layout before 2026-11-27; ``ppo-gold`` always uses a head). One line per run: wall seconds, then gold reward
and sequence KL at each evaluation (128 held-out prompts: about ±0.03 on the gold). docs/tuning.md lists
what these runs gave on the development machine.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from alignlab.config import select_track  # noqa: E402
from alignlab.pairs import load_pairs, load_prompts  # noqa: E402
from alignlab.dpo import DPOConfig, train_dpo  # noqa: E402
from alignlab.evaluation import evaluate_policy  # noqa: E402
from alignlab.models import PolicyWithValue, frozen_copy, load_sft_policy, load_tokenizer  # noqa: E402
from alignlab.ppo import PPOConfig, TextReward, model_reward, normalize_reward, train_ppo  # noqa: E402
from alignlab.reference import dpo_loss  # noqa: E402
from alignlab.reward_model import RewardModelConfig, pairwise_accuracy, score_pairs, train_reward_model  # noqa: E402
from alignlab.rewards import load_gold  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=["ppo", "ppo-gold", "dpo"])
    parser.add_argument("variants", help="a JSON list of config overrides, one run each")
    parser.add_argument("--rm-steps", type=int, default=200, help="reward-model steps for `ppo` (notebook 04: 200)")
    parser.add_argument("--value", choices=["reward-model", "head"], default="reward-model",
                        help="`ppo`: a value model copied from the reward model (notebook 04) or a head on the policy")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--eval-prompts", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    track = select_track("tiny")
    tokenizer, reference, gold = load_tokenizer(track), frozen_copy(load_sft_policy(track)), load_gold()
    train_prompts, test_prompts = load_prompts("train", track), load_prompts("test", track)

    def evaluate(model):
        return evaluate_policy(model, reference, tokenizer, gold, test_prompts, n=args.eval_prompts)

    if args.method == "ppo":
        rm = train_reward_model(load_pairs("train", track), RewardModelConfig.for_track(track, steps=args.rm_steps),
                                track=track, progress=False)
        test_pairs = load_pairs("test", track)[:1000]
        print(f"reward model: held-out accuracy {pairwise_accuracy(*score_pairs(rm, test_pairs, tokenizer)):.3f}"
              f" on {len(test_pairs)} pairs", flush=True)
        proxy = normalize_reward(model_reward(rm), reference, tokenizer, train_prompts, PPOConfig.for_track(track))
    elif args.method == "ppo-gold":
        proxy = TextReward(gold)
    else:
        pairs = load_pairs("train", track)

    for overrides in json.loads(args.variants):
        start = time.perf_counter()
        if args.method == "dpo":
            config = DPOConfig.for_track(track, pad_token_id=tokenizer.pad_token_id, **overrides)
            history = train_dpo(load_sft_policy(track), None, pairs, functools.partial(dpo_loss, beta=config.beta),
                                config, eval_fn=evaluate)
            points = [(e["step"], e["gold"], e["kl"], e.get("length", float("nan"))) for e in history.evals]
        else:
            config = PPOConfig.for_track(track, **overrides)
            value_from = proxy if args.method == "ppo" and args.value == "reward-model" else None
            policy = PolicyWithValue.around(load_sft_policy(track), value_from=value_from)
            history = train_ppo(policy, reference, tokenizer, proxy, train_prompts, config, evaluate=evaluate,
                                progress=False)
            points = [(e["iteration"], e["gold"], e["kl"], e.get("length", float("nan"))) for e in history.evals]
        trace = " | ".join(f"{step}: gold {g:.3f} KL {kl:.1f} length {n:.1f}" for step, g, kl, n in points)
        print(f"{args.method} {json.dumps(overrides)} {time.perf_counter() - start:.0f} s  {trace}", flush=True)


if __name__ == "__main__":
    main()
