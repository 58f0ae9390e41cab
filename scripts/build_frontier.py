"""Compute notebook 05's frontier baselines once and store them in data/frontier/baselines.json (a step of `make data`).

    .venv/bin/python scripts/build_frontier.py

Notebook 05 puts DPO on a reward-vs-KL frontier beside three baselines that run none of the learner's
code: PPO against the gold reward (30 iterations), best-of-n judged by the gold, and rejection sampling
(best of 8 by notebook 04's reward model, fine-tuned on, three rounds). They are the same in every run on
the tiny track, and they would be most of the notebook's time, so `make data` runs them
here, exactly as the notebook would (``alignlab.frontier.baselines`` with the tiny track's CPU
sweep, the notebook's held-out prompts and seeds), and stores their points with the settings, the
world's files and the code they came from. ``frontier.stored_or_run`` loads them only while all of
that still matches; otherwise the notebook runs them itself.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignlab import frontier, paths  # noqa: E402
from alignlab.config import Track  # noqa: E402
from alignlab.models import frozen_copy, load_sft_policy, load_tokenizer  # noqa: E402
from alignlab.pairs import load_prompts  # noqa: E402
from alignlab.rewards import load_gold  # noqa: E402


def main() -> None:
    track = Track("tiny", str(paths.TINY_POLICY_DIR), "cpu", False, "make data")
    tokenizer, gold = load_tokenizer(track), load_gold()
    reference = frozen_copy(load_sft_policy(track))
    prompts = load_prompts("test", track)
    start = time.perf_counter()
    stored = frontier.save_baselines(track, reference, tokenizer, gold, prompts, frontier.sweep_for_track(track))
    for method, run in stored.items():
        best = max(run["points"], key=lambda p: p["gold"])
        print(f"{method}: {len(run['points'])} points in {run['seconds']:.0f} s, best gold {best['gold']:.3f} "
              f"at KL {best['kl']:.2f}")
    print(f"-> {frontier.BASELINES_FILE} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
