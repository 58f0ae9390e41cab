"""Train notebook 04's reward models once and store them under data/reward-models/ (a step of `make data`).

    .venv/bin/python scripts/build_reward_models.py

Notebook 04 optimizes a reward model with PPO ("ppo") and shows reward hacking against a weak one
("weak"). Both are trained exactly as the notebook would train them on the tiny track at the CPU
scale (``alignlab.reward_model.ppo_reward_model_config``: the reference loss, seed 0, the training
pairs), then stored as float16 safetensors with their config, training curves and a fingerprint of
the policy and pairs they came from. ``stored_or_trained`` loads a stored model only while all of
that still matches, so a rebuilt policy or new pairs make the notebook train its own again.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from alignlab import paths, reward_model  # noqa: E402
from alignlab.config import Track  # noqa: E402
from alignlab.pairs import load_pairs  # noqa: E402


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    track = Track("tiny", str(paths.TINY_POLICY_DIR), "cpu", False, "make data")
    pairs, test_pairs = load_pairs("train"), load_pairs("test")[:1000]
    tokenizer = reward_model.models.load_tokenizer(track)
    for name in reward_model.PPO_REWARD_MODELS:
        config = reward_model.ppo_reward_model_config(name, track)
        start = time.perf_counter()
        model = reward_model.train_reward_model(pairs, config, track=track, progress=False)
        accuracy = reward_model.pairwise_accuracy(*reward_model.score_pairs(model, test_pairs, tokenizer))
        path = reward_model.save_stored(model, name, config)
        stored = reward_model.load_stored(name, config, track)
        stored_accuracy = reward_model.pairwise_accuracy(*reward_model.score_pairs(stored, test_pairs, tokenizer))
        print(f"{name}: {config.steps} steps in {time.perf_counter() - start:.0f} s, held-out accuracy "
              f"{accuracy:.3f} (stored float16 copy {stored_accuracy:.3f}) -> {path} "
              f"({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
