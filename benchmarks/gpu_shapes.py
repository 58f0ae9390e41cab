"""The gpt2 track at its real shapes, on a CPU: every notebook's loops, their memory, FLOPs and estimated GPU time.

    python benchmarks/gpu_shapes.py [--model build/gpt2-local] [--out benchmarks/results/gpu_shapes.json]

No GPU needed. It builds a GPT-2-124M-shaped model locally (``make_local_gpt2.py``: 12 layers, width 768,
vocabulary 50,257, random weights, the course's tokenizer), points the gpt2 track at it
(``ALIGNLAB_GPT2_PATH``, so every ``*.for_track(track)`` gives the GPU sizes) and runs the library's own
calls that each solution notebook runs -- pair regeneration, reward-model steps, best-of-n, PPO iterations
(both value layouts), DPO steps, held-out scoring, evaluation, online DPO sampling, GRPO -- at the real
sequence lengths (prompts of up to 8 tokens, 24 or 48 new tokens; a random model never stops early, so
every completion is full length, the worst case) on a few sequences each, twice (two sizes).

What it measures, per call, at both sizes:

- FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and attention; CPU attention's kernel is
  registered below with torch's own SDPA formula). FLOPs grow linearly with the padded tokens of a call
  (sequences x width; attention's quadratic part is about 3% at these lengths), so the count is scaled to
  the call's real size from the larger measured size.
- Memory: the bytes of live tensors (every storage an operator creates, freed when torch frees it, plus the
  models alive before the call), the quantity ``torch.cuda.max_memory_allocated`` reports on a GPU. Not the
  CUDA context (about 0.3-0.5 GB) nor the caching allocator's slack (often 10-30% more reserved). The peak
  above the models already held is fitted as a line through the two sizes, separately for each part of a
  call that has its own batch (PPO's rollout of 128 and its minibatches of 32), and read at the real size.
- Wall time on this machine (with the machine line and a calibration figure from ``calibrate.py``).

Then each notebook's whole run is composed from its config: how many of each call it makes on the gpt2
track (iterations, steps, evaluation cadence, samples), with the models it holds at that moment. GPU times
are ESTIMATES from FLOPs and stated assumptions (peak, utilisation, per-token launch overhead of sampling,
optimizer memory traffic, the gold classifier's CPU time), not measurements.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula  # noqa: E402
from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count  # noqa: E402

GiB = 2 ** 30

# ---------------------------------------------------------------------------- GPU assumptions (estimates)
# Peak dense FLOPS of each chip, and the share of it a GPT-2-small training loop reaches (our assumption).
# The library computes in float32 without autocast, and PyTorch leaves TF32 off for matmuls by default,
# so "fp32" is how the course runs today; "fp16/bf16" is what mixed precision would buy (not implemented).
GPUS = {
    "T4": {"fp32_peak": 8.1e12, "half_peak": 65e12, "bandwidth": 300e9, "decode_step_s": 0.008,
           "note": "Colab T4: 8.1 TFLOPS fp32, 65 TFLOPS fp16 tensor cores, 300 GB/s"},
    "H100": {"fp32_peak": 67e12, "half_peak": 989e12, "bandwidth": 3.35e12, "decode_step_s": 0.004,
             "note": "H100 SXM: 67 TFLOPS fp32 (no tensor cores), 989 TFLOPS bf16 dense, 3.35 TB/s"},
}
UTILISATION = {"fp32": 0.5, "half": 0.35}   # realistic shares of peak for a 124M model at batch x tokens ~ 2-7k
# Sampling is one small forward per new token: eager PyTorch launches ~150 kernels per step, so each step
# costs at least this much on top of its FLOPs (decode_step_s above). An optimizer step moves about
# 16 bytes per parameter through memory (AdamW: read param, grad, two moments; write param and moments),
# plus the gradient clip's read; the gold classifier is a TF-IDF model on the CPU (rate measured here).
ADAM_BYTES_PER_PARAM = 32


# ---------------------------------------------------------------------------- FLOPs of CPU attention
def _register_cpu_attention_flops() -> None:
    """FlopCounterMode knows the CUDA attention kernels, not the CPU one: give it torch's own SDPA formula."""
    aten = torch.ops.aten
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None and fwd not in flop_registry:
        @register_flop_formula(fwd)
        def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return sdpa_flop_count(query_shape, key_shape, value_shape)
    if bwd is not None and bwd not in flop_registry:
        @register_flop_formula(bwd)
        def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                               **kwargs) -> int:
            return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_register_cpu_attention_flops()


# ---------------------------------------------------------------------------- live tensor bytes, by part
class LiveBytes(TorchDispatchMode):
    """Bytes of live tensor storages: those alive at the start (``keep``) and every one an operator creates.

    Each storage is counted once (views share it) and uncounted when torch frees it. ``part(name)`` labels
    what runs inside it; the peak and the FLOPs (read from ``flops``, a FlopCounterMode) are kept per part.
    Optimizer steps are labelled "optimizer" through torch's global optimizer hooks.
    """

    active: "LiveBytes | None" = None

    def __init__(self, keep=(), flops: FlopCounterMode | None = None):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.flops = flops
        self.stack = ["main"]
        self.peaks: dict[str, int] = {}
        self.flops_by_part: dict[str, int] = {}
        self._mark = 0
        for obj in keep:
            self.add_module(obj)
        self.baseline = self.current

    # bookkeeping
    def add(self, t: torch.Tensor) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        storage = t.untyped_storage()
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes == 0 or key in self.live:
            return
        self.live[key] = nbytes
        self.current += nbytes
        part = self.stack[-1]
        if self.current > self.peaks.get(part, 0):
            self.peaks[part] = self.current
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def add_module(self, obj) -> None:
        """Count a module's parameters, gradients and buffers (or a tensor) as alive."""
        if isinstance(obj, torch.Tensor):
            self.add(obj)
            return
        for p in obj.parameters():
            self.add(p)
            if p.grad is not None:
                self.add(p.grad)
        for b in obj.buffers():
            self.add(b)

    def _flop_total(self) -> int:
        return self.flops.get_total_flops() if self.flops is not None else 0

    def _switch(self, new_part: str | None) -> None:
        now = self._flop_total()
        top = self.stack[-1]
        self.flops_by_part[top] = self.flops_by_part.get(top, 0) + now - self._mark
        self._mark = now
        if new_part is None:
            self.stack.pop()
        else:
            self.stack.append(new_part)
            self.peaks[new_part] = max(self.peaks.get(new_part, 0), self.current)

    @contextlib.contextmanager
    def part(self, name: str):
        self._switch(name)
        try:
            yield
        finally:
            self._switch(None)

    # the mode
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.add(t)
        return out

    def __enter__(self):
        LiveBytes.active = self
        self._mark = self._flop_total()
        self.peaks["main"] = self.current
        self._hooks = [register_optimizer_step_pre_hook(lambda *a: self._switch("optimizer")),
                       register_optimizer_step_post_hook(lambda *a: self._switch(None))]
        return super().__enter__()

    def __exit__(self, *exc):
        self._switch("main")
        self.stack = ["main"]
        for h in self._hooks:
            h.remove()
        LiveBytes.active = None
        return super().__exit__(*exc)


def part(name: str):
    """Label what runs inside as ``name`` in the active tracker (no-op outside a measurement)."""
    return LiveBytes.active.part(name) if LiveBytes.active is not None else contextlib.nullcontext()


def _install_probes() -> None:
    """Benchmark-only wrappers: models loaded from disk (not created by an operator) join the count, and
    PPO's rollout and reward get their own part. Each wrapper calls the library's function unchanged."""
    import alignlab
    from alignlab import models, pairs, ppo, reward_model, best_of_n, online, evaluation  # noqa: F401

    original = models.load_policy

    @functools.wraps(original)
    def load_policy(*args, **kwargs):
        model = original(*args, **kwargs)
        if LiveBytes.active is not None:
            LiveBytes.active.add_module(model)
        return model

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("alignlab") and getattr(module, "load_policy", None) is original:
            module.load_policy = load_policy

    # Parts with their own batch: PPO's rollout (all rollouts at once), and the sub-calls that best-of-n and
    # online DPO make in fixed chunks (reward-model scoring, reference log-probs), so each is scaled to its size.
    for module, name, label in ((ppo, "collect_rollouts", "rollout"), (evaluation, "sample", "sample"),
                                (best_of_n, "score_batch", "score"),
                                (online, "completion_logps", "reference"), (online, "score_completions", "labeller")):
        setattr(module, name, _labelled(getattr(module, name), label))
    for module in (best_of_n, online):               # they sample through rollout.sample_groups, a generator
        module.sample_groups = _labelled_generator(module.sample_groups, "sample")
    assert alignlab  # imported for its side effect of loading every module above


def _labelled_generator(fn, label):
    """``fn`` yields as it samples: each step of the iteration (the sampling) is counted under ``label``,
    what the caller does with a yielded part (scoring it) is not."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        parts = fn(*args, **kwargs)
        while True:
            with part(label):
                try:
                    item = next(parts)
                except StopIteration:
                    return
            yield item
    return wrapper


def _labelled(fn, label):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with part(label):
            return fn(*args, **kwargs)
    return wrapper


class TaggedReward:
    """A PPO reward (ModelReward or TextReward) whose call is its own part, "reward"."""

    def __init__(self, reward):
        self.reward = reward
        self.reward_model = getattr(reward, "reward_model", None)
        self.shift, self.scale = getattr(reward, "shift", 0.0), getattr(reward, "scale", 1.0)

    def __call__(self, batch):
        with part("reward"):
            return self.reward(batch)


# ---------------------------------------------------------------------------- one call, two sizes
@dataclass
class Call:
    """One library call, measured at two sizes and scaled to its real size on the gpt2 track.

    ``run(size)`` makes the call and returns, per part, the padded tokens it processed:
    ``{"main": {"mem": tokens in one batch, "flops": tokens over the whole call}}``.
    ``full`` gives the same at the real size (one step). ``keep()`` lists the models alive before the call.
    """

    name: str
    what: str
    run: object
    sizes: tuple
    full: dict
    keep: object = lambda: ()
    decode_steps: int = 0          # sampling steps (new tokens) of one full-size step
    optimizer_params: int = 0      # parameters updated per optimizer step; optimizer steps per full-size step:
    optimizer_steps: int = 0
    gold_texts: int = 0            # texts the gold classifier scores in one full-size step
    results: list = field(default_factory=list)

    def measure(self) -> None:
        for size in self.sizes:
            gc.collect()
            counter = FlopCounterMode(display=False)
            keep = list(self.keep())
            tracker = LiveBytes(keep, flops=counter)
            start, cpu = time.perf_counter(), time.process_time()
            with counter, tracker:
                tokens = self.run(size)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            del keep
            self.results.append({"size": size, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "tokens": tokens,
                                 "baseline_bytes": tracker.baseline, "peak_bytes": dict(tracker.peaks),
                                 "flops": counter.get_total_flops(), "flops_by_part": dict(tracker.flops_by_part)})
            del tracker, counter
            gc.collect()

    # scaling
    def _tokens(self, r, part_name, kind):
        t = r["tokens"].get(part_name) or r["tokens"]["main"]
        return t[kind]

    def _full(self, part_name, kind):
        t = self.full.get(part_name) or self.full["main"]
        return t[kind]

    def step_flops(self) -> float:
        """FLOPs of one full-size step: each part's count per token at the larger size, times its real tokens."""
        r = self.results[-1]
        total = 0.0
        for name, flops in r["flops_by_part"].items():
            if flops:
                total += flops / self._tokens(r, name, "flops") * self._full(name, "flops")
        return total

    def linearity(self) -> float:
        """FLOPs per token at the larger size over the smaller: 1.0 when the scaling by tokens holds."""
        a, b = self.results
        per_a = a["flops"] / sum(self._tokens(a, p, "flops") for p in ["main"])
        per_b = b["flops"] / sum(self._tokens(b, p, "flops") for p in ["main"])
        return per_b / per_a if per_a else float("nan")

    def transient_bytes(self) -> tuple[float, str]:
        """(peak bytes above the models held before the call at the real size, the part where it peaks).

        A training call is measured on its first step, before AdamW has moments and while no gradient is
        left over. In the steps after it, both are alive outside the optimizer step too (the loops call
        zero_grad after the forward pass): 3 x the trained parameters' bytes are added to every other
        part, an upper bound (during the backward pass the old gradients are already freed)."""
        a, b = self.results
        steady = 3 * 4 * self.optimizer_params
        best, where = 0.0, "main"
        for name in set(a["peak_bytes"]) | set(b["peak_bytes"]):
            ya = a["peak_bytes"].get(name, 0) - a["baseline_bytes"]
            yb = b["peak_bytes"].get(name, 0) - b["baseline_bytes"]
            xa, xb = self._tokens(a, name, "mem"), self._tokens(b, name, "mem")
            slope = max(0.0, (yb - ya) / (xb - xa)) if xb != xa else 0.0
            y = yb + slope * (self._full(name, "mem") - xb) + (steady if name != "optimizer" else 0)
            if y > best:
                best, where = y, name
        return best, where

    def summary(self) -> dict:
        transient, where = self.transient_bytes()
        return {"name": self.name, "what": self.what, "full": self.full,
                "step_gflop": round(self.step_flops() / 1e9, 1), "flops_per_token_ratio": round(self.linearity(), 3),
                "transient_gib": round(transient / GiB, 3), "peak_part": where,
                "decode_steps": self.decode_steps, "optimizer_steps": self.optimizer_steps,
                "optimizer_params": self.optimizer_params, "gold_texts": self.gold_texts,
                "measured": self.results}

    def variant(self, name: str, what: str, full: dict, exclude: tuple = (), only: tuple = (), **counts) -> "Call":
        """The same measured call at another real size (``full``), without some parts or with only some."""
        def keep(k):
            return k not in exclude and (not only or k in only)
        results = [{**r, "flops_by_part": {k: v for k, v in r["flops_by_part"].items() if keep(k)},
                    "peak_bytes": {k: v for k, v in r["peak_bytes"].items() if keep(k)}}
                   for r in self.results]
        return replace(self, name=name, what=what, full=full, results=results, **counts)


def tok(mem: int, flops: int | None = None) -> dict:
    return {"mem": mem, "flops": mem if flops is None else flops}


# ---------------------------------------------------------------------------- DPO batches: unique sequences
PAIRS_PER_PROMPT, SAMPLES = 6, 4
COMBOS = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]   # make_pairs' order of a prompt's pairs


def unique_sequences(pair_ids: list[int]) -> int:
    """Distinct completions (sequences) in a batch of pairs; pair k is prompt k // 6, combination k % 6."""
    seqs = set()
    for k in pair_ids:
        p, (a, b) = divmod(k, PAIRS_PER_PROMPT)[0], COMBOS[k % PAIRS_PER_PROMPT]
        seqs.update({(p, a), (p, b)})
    return len(seqs)


def mean_unique_per_batch(n_pairs: int, batch: int, steps: int, grouped: bool, pool: list[int] | None = None,
                          seed: int = 0) -> float:
    """Mean distinct sequences per DPO batch over a run, as ``train_dpo`` visits the pairs (``visit_order``).

    Grouped: a prompt's 6 pairs stay together, so batches cut through prompts in a fixed pattern.
    Ungrouped: a random permutation of ``pool`` (the pairs' indices in the stored split)."""
    pool = list(range(n_pairs)) if pool is None else pool
    if grouped:
        order = pool                                  # shuffling whole prompts leaves the pattern unchanged
    else:
        g = torch.Generator().manual_seed(seed)
        order = [pool[i] for i in torch.randperm(len(pool), generator=g).tolist()]
    total, pos = 0, 0
    for _ in range(steps):
        ids = [order[(pos + i) % len(order)] for i in range(batch)]
        pos += batch
        total += unique_sequences(ids)
    return total / steps


# ---------------------------------------------------------------------------- the calls each notebook makes
class World:
    """The gpt2 track on the local model, and the models and data the calls share (loaded once)."""

    def __init__(self, model_dir: Path):
        from alignlab import config
        from alignlab.models import RewardModel, frozen_copy, load_policy, load_tokenizer
        from alignlab.pairs import load_prompts
        from alignlab.rewards import load_gold

        os.environ["ALIGNLAB_GPT2_PATH"] = str(model_dir)
        for var in ("ALIGNLAB_TRACK", "NBGRADER_EXECUTION"):
            os.environ.pop(var, None)
        self.track = config.select_track("gpt2")
        assert self.track.name == "gpt2" and self.track.policy == str(model_dir), self.track
        self.tokenizer = load_tokenizer(self.track)
        self.policy = load_policy(self.track)
        self.reference = frozen_copy(self.policy)
        self.reward_model = RewardModel.from_policy(self.track).eval()   # an untrained head costs what a trained one does
        self.gold = load_gold()
        self.train_prompts = load_prompts("train", self.track)
        self.test_prompts = load_prompts("test", self.track)
        width = max(len(p["prompt_ids"]) for p in self.train_prompts)
        self.prompt_width = width                                            # 8 here
        self.long_train = [p for p in self.train_prompts if len(p["prompt_ids"]) == width]
        self.long_test = [p for p in self.test_prompts if len(p["prompt_ids"]) == width]
        self.param_bytes = sum(p.numel() * p.element_size() for p in self.policy.parameters())
        self.params = sum(p.numel() for p in self.policy.parameters())

    def pairs(self, n_prompts: int) -> list[dict]:
        from alignlab.pairs import load_pairs
        return load_pairs("train", self.track, n=PAIRS_PER_PROMPT * n_prompts)

    def trainable(self):
        import copy
        return copy.deepcopy(self.policy).requires_grad_(True)


def pair_width(rows) -> int:
    return max(len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in rows)


def build_calls(w: World) -> dict[str, Call]:
    from alignlab import preference, reference
    from alignlab.best_of_n import BestOfNConfig, best_of_n_pool
    from alignlab.data import collate_pairs
    from alignlab.dpo import DPOConfig, pair_logps, train_dpo
    from alignlab.evaluation import evaluate_policy
    from alignlab.models import PolicyWithValue
    from alignlab.online import OnlineDPOConfig, reward_model_labeller, sample_online_pairs
    from alignlab.ppo import ModelReward, PPOConfig, normalize_reward, train_ppo
    from alignlab.reward_model import RewardModelConfig, score_pairs, train_reward_model

    t = w.track
    P = w.prompt_width
    ppo = PPOConfig.for_track(t)
    bon = BestOfNConfig.for_track(t)
    online = OnlineDPOConfig.for_track(t)
    rm_cfg = RewardModelConfig.for_track(t)
    L_ppo = ppo.max_new_tokens                                   # 48
    L_pairs = 24                                                 # alignlab.pairs.MAX_NEW_TOKENS
    calls: dict[str, Call] = {}

    def ids(rows):
        return [list(r["prompt_ids"]) for r in rows]

    def pairs_run(s):
        rows = w.pairs(s)
        width = max(len(p["prompt_ids"]) for p in w.train_prompts[:s]) + L_pairs
        assert len(rows) == PAIRS_PER_PROMPT * s
        return {"main": tok(SAMPLES * s * width)}

    chunk = 256                                                   # track_pairs' batch_prompts on cuda
    calls["pairs"] = Call("pairs", f"load_pairs regeneration: one chunk of {chunk} prompts x 4 samples x 24 tokens "
                          "(load_policy, sample, gold)", pairs_run, (1, 2),
                          {"main": tok(chunk * SAMPLES * (P + L_pairs))}, decode_steps=L_pairs,
                          gold_texts=chunk * SAMPLES)

    def pref_run(s):
        rows = w.pairs(2)[:s]
        preference.policy_preference_rate(w.policy, rows, w.tokenizer.pad_token_id, reference.token_logprobs,
                                          reference.sequence_logprob)
        width = pair_width(rows)
        return {"main": tok(s * width, 2 * s * width)}

    calls["pref_rate"] = Call("pref_rate", "preference.policy_preference_rate: a batch of 64 pairs, both sides",
                              pref_run, (1, 2), {"main": tok(64 * (P + 24), 2 * 64 * (P + 24))},
                              keep=lambda: [w.policy])

    def rm_run(s):
        rows = w.pairs(2)[:s]
        cfg = RewardModelConfig.for_track(t, steps=1, batch_size=s)
        train_reward_model(rows, cfg, track=t, progress=False)
        return {"main": tok(2 * s * pair_width(rows))}

    rm_full = 2 * rm_cfg.batch_size * (P + 24)
    calls["rm_step"] = Call("rm_step", f"train_reward_model: one step of {rm_cfg.batch_size} pairs "
                            "(with the model build and AdamW state)", rm_run, (1, 2), {"main": tok(rm_full)},
                            optimizer_steps=1, optimizer_params=w.params)

    def score_run(s):
        rows = w.pairs(2)[:s]
        score_pairs(w.reward_model, rows, w.tokenizer)
        return {"main": tok(2 * s * pair_width(rows))}

    calls["score_pairs"] = Call("score_pairs", "reward_model.score_pairs: a batch of 128 pairs", score_run, (1, 2),
                                {"main": tok(2 * 128 * (P + 24))}, keep=lambda: [w.reward_model])

    def bon_run(s):
        cfg = BestOfNConfig.for_track(t, n_prompts=1, prompts_per_call=1, n_max=s)
        best_of_n_pool(w.policy, w.tokenizer, w.long_test[:1], w.reward_model, w.gold, cfg, progress=False)
        return {"main": tok(s * (P + bon.max_new_tokens))}

    per_call = bon.prompts_per_call * bon.n_max
    Wb = P + bon.max_new_tokens
    calls["bon"] = Call("bon", f"best_of_n_pool: one call, {bon.prompts_per_call} prompts x {bon.n_max} samples x "
                        f"{bon.max_new_tokens} tokens, reward model (chunks of 256) and gold", bon_run, (2, 4),
                        {"main": tok(per_call * Wb), "score": tok(min(per_call, 256) * Wb, per_call * Wb)},
                        keep=lambda: [w.policy, w.reward_model], decode_steps=bon.max_new_tokens, gold_texts=per_call)

    def eval_call(L):
        def run(s):
            evaluate_policy(w.policy, w.reference, w.tokenizer, w.gold, w.long_test[:s], n=s, max_new_tokens=L)
            return {"main": tok(s * (P + L)), "sample": tok(s * (P + L))}
        return run

    for L in (24, L_ppo):
        calls[f"evaluate{L}"] = Call(f"evaluate{L}", f"evaluate_policy: one batch of 128 prompts x {L} tokens "
                                     "(rollout.sample, reference log-probs, gold)", eval_call(L), (2, 4),
                                     {"main": tok(128 * (P + L))}, keep=lambda: [w.policy, w.reference],
                                     decode_steps=L, gold_texts=128)

    def normalize_run(s):
        normalize_reward(ModelReward(w.reward_model), w.reference, w.tokenizer, w.long_train, ppo, n=s)
        return {"main": tok(s * (P + L_ppo))}

    calls["normalize"] = Call("normalize", f"ppo.normalize_reward: one chunk of {ppo.batch_size} reference samples "
                              f"x {L_ppo} tokens, scored", normalize_run, (2, 4),
                              {"main": tok(ppo.batch_size * (P + L_ppo))}, keep=lambda: [w.reference, w.reward_model],
                              decode_steps=L_ppo)

    # PPO: measured with ppo_epochs=1 on 2s rollouts in minibatches of s; the update's FLOPs are then
    # counted ppo_epochs times. Rollout and reward parts scale to batch_size, the update to minibatch_size.
    W = P + L_ppo
    updates = ppo.ppo_epochs * (ppo.batch_size // ppo.minibatch_size)
    ppo_full = {"rollout": tok(ppo.batch_size * W), "reward": tok(ppo.batch_size * W),
                "main": tok(ppo.minibatch_size * W, ppo.ppo_epochs * ppo.batch_size * W),
                "optimizer": tok(ppo.minibatch_size * W, 0)}
    held = {}

    def ppo_call(layout):
        def keep():
            policy = w.trainable()
            reward = ModelReward(w.reward_model)
            held["pv"] = (PolicyWithValue.around(policy, reward) if layout == "value_model"
                          else PolicyWithValue.around(policy))
            return [w.reference, w.reward_model, held["pv"]]

        def run(s):
            cfg = replace(ppo, iterations=1, batch_size=2 * s, minibatch_size=s, ppo_epochs=1)
            train_ppo(held.pop("pv"), w.reference, w.tokenizer, TaggedReward(ModelReward(w.reward_model)),
                      w.long_train, cfg, evaluate=None, progress=False)
            return {"rollout": tok(2 * s * W), "reward": tok(2 * s * W), "main": tok(s * W, 2 * s * W),
                    "optimizer": tok(s * W, 0)}
        return run, keep

    run, keep = ppo_call("value_model")
    calls["ppo_vm"] = Call("ppo_vm", f"train_ppo: one iteration, {ppo.batch_size} rollouts x {L_ppo} tokens, "
                           f"{ppo.ppo_epochs} epochs of minibatches of {ppo.minibatch_size}; value model = a copy of "
                           "the reward model (notebook 04)", run, (1, 2), ppo_full, keep=keep, decode_steps=L_ppo,
                           optimizer_steps=updates, optimizer_params=2 * w.params)
    run, keep = ppo_call("value_head")
    calls["ppo_head"] = Call("ppo_head", "train_ppo: one iteration as above with a value head on the policy, "
                             "reward model reward (04's beta = 0 run)", run, (1, 2), ppo_full, keep=keep,
                             decode_steps=L_ppo, optimizer_steps=updates, optimizer_params=w.params)

    # DPO: a step on the pairs of s prompts (6 pairs each, grouped as notebook 05 groups them).
    def dpo_keep():
        held["dpo"] = w.trainable()
        return [held["dpo"]]

    def dpo_run(s):
        from alignlab.reference import dpo_loss
        rows = w.pairs(s)
        cfg = DPOConfig.for_track(t, steps=1, batch_size=len(rows), pad_token_id=w.tokenizer.pad_token_id)
        train_dpo(held.pop("dpo"), None, rows, functools.partial(dpo_loss, beta=cfg.beta), cfg)
        return {"main": tok(unique_sequences(range(len(rows))) * pair_width(rows))}

    dpo = DPOConfig.for_track(t)
    u04 = mean_unique_per_batch(12_000, dpo.batch_size, dpo.steps, grouped=True)
    calls["dpo_step"] = Call("dpo_step", f"train_dpo: one step (AdamW) of {dpo.batch_size} pairs grouped by prompt "
                             f"({u04:.1f} distinct sequences), stored reference log-probs", dpo_run, (1, 2),
                             {"main": tok(round(u04 * (P + 24)))}, keep=dpo_keep, optimizer_steps=1,
                             optimizer_params=w.params)

    def logps_run(s):
        rows = w.pairs(s)
        batch = collate_pairs(rows, pad_id=w.tokenizer.pad_token_id)
        with torch.no_grad():
            pair_logps(w.policy, batch)
        return {"main": tok(unique_sequences(range(len(rows))) * pair_width(rows))}

    calls["pair_logps"] = Call("pair_logps", f"dpo.pair_logps without gradient: a batch of {dpo.batch_size} pairs "
                               "grouped by prompt (held-out pairs, reference)", logps_run, (1, 2),
                               {"main": tok(round(u04 * (P + 24)))}, keep=lambda: [w.policy])

    def online_run(s):
        cfg = OnlineDPOConfig.for_track(t)
        sample_online_pairs(w.policy, w.reference, w.tokenizer, ids(w.long_train[:s]),
                            reward_model_labeller(w.reward_model, w.tokenizer.pad_token_id), cfg, gold=w.gold,
                            generator=torch.Generator().manual_seed(0))
        return {"main": tok(cfg.samples_per_prompt * s * (P + cfg.max_new_tokens))}

    n_online = online.prompts_per_round * online.samples_per_prompt
    Wo = P + online.max_new_tokens
    calls["online_sample"] = Call("online_sample", f"online.sample_online_pairs: one round, {online.prompts_per_round} "
                                  f"prompts x {online.samples_per_prompt} samples x {online.max_new_tokens} tokens in calls of "
                                  f"{online.sample_batch}, reward-model labels and reference log-probs in chunks of 128", online_run, (1, 2),
                                  {"main": tok(n_online * Wo),
                                   "sample": tok(min(n_online, online.sample_batch) * Wo, n_online * Wo),
                                   "labeller": tok(min(n_online, 128) * Wo, n_online * Wo),
                                   "reference": tok(min(n_online, 128) * Wo, n_online * Wo)},
                                  keep=lambda: [w.policy, w.reference, w.reward_model],
                                  decode_steps=online.max_new_tokens, gold_texts=n_online)
    return calls


# ---------------------------------------------------------------------------- notebook 07: its own tiny model
def measure_arithmetic(notebook: str) -> dict:
    """Notebooks 03 (REINFORCE, RLOO) and 07 (GRPO) ask for select_track("tiny") and keep their arithmetic model
    on the CPU on every track: one training step and one held-out evaluation at the notebook's sizes, for real."""
    from alignlab import arithmetic, config, reinforce
    from alignlab import grpo as grpo_lib

    track = config.select_track("tiny")
    if notebook == "03_policy_gradients":
        cfg, train_fn = reinforce.PGConfig.for_track(track), reinforce.train_pg
        evaluate, runs, what = reinforce._evaluate, 2, "REINFORCE step"          # REINFORCE and RLOO
    else:
        cfg, train_fn = grpo_lib.GRPOConfig.for_track(track), grpo_lib.train_grpo
        evaluate, runs, what = grpo_lib.evaluate, 5, "GRPO step"     # 3 aggregations + 2 KL placements
    train, test = arithmetic.split_problems()
    evals = test[:cfg.eval_problems]
    out = {}
    for steps in (1, 2):
        policy = arithmetic.load_policy()
        counter = FlopCounterMode(display=False)
        tracker = LiveBytes([policy], flops=counter)
        start = time.perf_counter()
        with counter, tracker:
            history = train_fn(policy, train, evals, replace(cfg, steps=steps, eval_every=10 ** 6), progress=False)
        out[steps] = {"flops": counter.get_total_flops(), "wall_s": time.perf_counter() - start,
                      "peak_bytes": max(tracker.peaks.values()),
                      "step_s": history.steps[-1]["seconds"] - (history.steps[-2]["seconds"] if steps > 1 else 0)}
    policy = arithmetic.load_policy()
    counter = FlopCounterMode(display=False)
    with counter:
        evaluate(policy, evals)
    eval_flops = counter.get_total_flops()
    step = out[2]["flops"] - out[1]["flops"]
    total = runs * (cfg.steps * step + (cfg.steps // cfg.eval_every + 1) * eval_flops)
    return {"what": what, "config": {"steps": cfg.steps, "prompts_per_step": cfg.prompts_per_step,
                                     "group_size": cfg.group_size, "eval_problems": cfg.eval_problems,
                                     "runs": runs, "device": "cpu (every track)"},
            "params": sum(p.numel() for p in policy.parameters()), "step_flops": step, "eval_flops": eval_flops,
            "run_flops": total, "step_wall_s": out[2]["step_s"], "peak_bytes": out[2]["peak_bytes"]}


ARITHMETIC_NOTEBOOKS = ("03_policy_gradients", "07_rlvr")


# ---------------------------------------------------------------------------- each notebook's whole run
@dataclass
class Use:
    """``count`` full-size steps of a call, made while the notebook holds ``resident`` models' worth of
    tensors on the GPU (in units of one GPT-2's parameters; AdamW state = 2, gradients = 1), inputs included.
    ``calls``: sampling calls (for the per-token launch cost; default: ceil(count))."""

    call: Call
    count: float
    resident: float
    note: str = ""
    calls: float | None = None

    def flops(self) -> float:
        return self.count * self.call.step_flops()

    def peak_bytes(self, param_bytes: int) -> float:
        return self.resident * param_bytes + self.call.transient_bytes()[0]

    def overheads(self, gpu: dict, gold_rate: float) -> float:
        calls = math.ceil(self.count) if self.calls is None else self.calls
        decode = calls * self.call.decode_steps * gpu["decode_step_s"]
        optim = self.count * self.call.optimizer_steps * self.call.optimizer_params * ADAM_BYTES_PER_PARAM / gpu["bandwidth"]
        gold = self.count * self.call.gold_texts / gold_rate
        return decode + optim + gold


def notebooks(w: World, c: dict[str, Call]) -> dict[str, dict]:
    """What each solution notebook runs on the gpt2 track (its cells, with the sizes its configs pick)."""
    from alignlab.best_of_n import BestOfNConfig
    from alignlab.dpo import DPOConfig
    from alignlab.online import OnlineDPOConfig
    from alignlab.ppo import PPOConfig
    from alignlab.reward_model import RewardModelConfig

    t = w.track
    bon = BestOfNConfig.for_track(t)
    P = w.prompt_width
    W24 = P + 24
    chunk = 256
    n_train, n_test = len(w.train_prompts), len(w.test_prompts)             # 3000, 500 prompts
    ppo, rm = PPOConfig.for_track(t), RewardModelConfig.for_track(t)
    dpo = DPOConfig.for_track(t)
    online = OnlineDPOConfig.for_track(t, rounds=t.pick(cpu=3, gpu=5, grading=2))
    evals_ppo = ppo.iterations // ppo.eval_every + 1                          # 0, 25, ..., 150
    evals_dpo = dpo.steps // dpo.eval_every + 1                               # 0, 100, ..., 600

    def pairs(prompts, resident, note):
        return Use(c["pairs"], prompts / chunk, resident, note, calls=math.ceil(prompts / chunk))

    def dpo_at(unique, name):
        return c["dpo_step"].variant(name, f"train_dpo: one step, {unique:.1f} distinct sequences x {W24} tokens",
                                     {"main": tok(round(unique * W24))})

    def ev48(n, times, res, note):
        return Use(c["evaluate48"], times * n / 128, res, note, calls=times * math.ceil(n / 128))
    def ev24(n, times, res, note):
        return Use(c["evaluate24"], times * n / 128, res, note, calls=times * math.ceil(n / 128))

    # notebook 05: 12,000 pairs grouped by prompt, batches of 64; held-out: the first 1,200 test pairs
    u04 = mean_unique_per_batch(12_000, dpo.batch_size, dpo.steps, grouped=True)
    held = [unique_sequences(range(i, min(i + dpo.batch_size, 1200))) for i in range(0, 1200, dpo.batch_size)]
    heldout = c["pair_logps"].variant("heldout", f"held-out pairs: {len(held)} batches, {sum(held)} distinct sequences",
                                      {"main": tok(max(held) * W24, sum(held) * W24)})
    u_try = unique_sequences(range(32))
    # notebook 06: ungrouped batches of 64 from 4,096 random train pairs (noise), all 18,000 (offline, SimPO)
    g = torch.Generator().manual_seed(0)
    noisy = torch.randperm(n_train * PAIRS_PER_PROMPT, generator=g)[:4096].tolist()
    u05n = mean_unique_per_batch(0, 64, 600, grouped=False, pool=noisy)
    u05 = mean_unique_per_batch(n_train * PAIRS_PER_PROMPT, 64, 600, grouped=False)
    online_steps = max(1, 600 // online.rounds)
    def sampling(L, n, name, what, gold=0):
        """rollout.sample alone: the sampling part of evaluate_policy's call at that length, n sequences."""
        return c[f"evaluate{L}"].variant(name, what, {"sample": tok(n * (P + L))}, only=("sample",), gold_texts=gold)

    sample4 = sampling(24, 4, "sample24", "rollout.sample: 4 prompts x 24 tokens", gold=4)
    lengths = sampling(48, 500, "sample48", "rollout.sample: 500 prompts x 48 tokens in one call")
    bon_points = sampling(24, 8 * 128, "bon_points", "best_of_n_points: one call, 8 prompts x 128 samples x 24 tokens, "
                          "gold", gold=8 * 128)
    grpo_demo = sampling(48, 24, "grpo_demo", "sample: 3 prompts x 8 samples x 48 tokens")
    ppo_gold = c["ppo_head"].variant("ppo_gold", "train_ppo: one iteration, value head, gold reward (05's frontier)",
                                     c["ppo_head"].full, exclude=("reward",), gold_texts=ppo.batch_size)
    try_step = dpo_at(u_try, "debug_step")
    try_ref = c["pair_logps"].variant("debug_ref", "pair_logps of the reference, 32 pairs",
                                      {"main": tok(u_try * W24)})
    sweep_betas, sweep_kl = 3, 4

    return {
        "00_getting_started": {"step": Use(sample4, 1, 1, "sample 4 prompts x 24 tokens"),
                               "uses": [Use(sample4, 1, 1, "sample 4 prompts x 24 tokens")]},
        "01_preference_data": {"step": pairs(chunk, 1, "one chunk"), "uses": [
            pairs(n_train, 1, "regenerate the 18,000 train pairs (first load; cached afterwards)"),
            Use(sample4, 1, 1, "sample 4 x 24"),
            Use(c["pref_rate"], 2048 / 64, 1, "policy_preference_rate on 2,048 pairs")]},
        "02_reward_model": {"step": Use(c["rm_step"], 1, 1, "one reward-model step"), "uses": [
            pairs(n_train, 0, "train pairs (regenerated unless cached)"),
            pairs(n_test, 0, "test pairs (regenerated unless cached)"),
            Use(c["rm_step"], rm.steps, 1, f"reward model, {rm.steps} steps x {rm.batch_size} pairs"),
            Use(c["score_pairs"], min(rm.eval_pairs, n_test * 6) / 128, 2, "score the held-out pairs"),
            Use(c["bon"], 128 / bon.prompts_per_call, 3, "best-of-n pool, 128 prompts x 256 samples")]},
        "04_rlhf_ppo": {"step": Use(c["ppo_vm"], 1, 4, "one PPO iteration"), "uses": [
            pairs(n_train, 1, "train pairs (regenerated unless cached)"),
            Use(c["rm_step"], rm.steps, 1, "reward model"),
            Use(c["normalize"], ppo.normalize_samples / ppo.batch_size, 2, "normalize the reward"),
            Use(c["ppo_vm"], ppo.iterations, 4, f"PPO, {ppo.iterations} iterations"),
            ev48(256, evals_ppo, 10, f"{evals_ppo} evaluations inside PPO (AdamW state alive)"),
            ev48(n_test, 2, 4, "start and end on all 500 test prompts"),
            Use(c["rm_step"], 150, 4, "weak reward model, 150 steps"),
            Use(c["normalize"], ppo.normalize_samples / ppo.batch_size, 5, "normalize the weak reward"),
            pairs(n_test, 5, "test pairs (regenerated unless cached)"),
            Use(c["score_pairs"], 2 * 2000 / 128, 5, "two reward models on 2,000 test pairs"),
            Use(c["ppo_head"], ppo.iterations, 6, "beta = 0 run, value head"),
            ev48(256, evals_ppo, 9, f"{evals_ppo} evaluations inside the beta = 0 run")]},
        "05_dpo": {"step": Use(dpo_at(u04, "dpo_step_05"), 1, 2, "one DPO step"), "uses": [
            pairs(2000, 2, "12,000 train pairs = 2,000 prompts: its own cache key, regenerated even after 01-04"),
            pairs(n_test, 2, "test pairs (regenerated unless cached)"),
            Use(dpo_at(u04, "dpo_step_05"), dpo.steps, 2, f"DPO, {dpo.steps} steps x {dpo.batch_size} pairs grouped"),
            ev24(256, evals_dpo, 5, f"{evals_dpo} evaluations inside DPO"),
            Use(heldout, dpo.steps // dpo.heldout_every + 1, 5, "held-out pairs every 25 steps"),
            Use(sample4, 2, 2, "show samples"),
            Use(try_step, 8, 3, "debugging exercise: 2 x 4 steps on 32 pairs (SGD; counted as AdamW)"),
            Use(try_ref, 8, 3, "its reference forward"),
            Use(dpo_at(u04, "dpo_step_05"), sweep_betas * dpo.steps, 3, "frontier: 3 more betas"),
            ev24(256, sweep_betas * evals_dpo, 6, "their evaluations"),
            Use(ppo_gold, sweep_kl * ppo.iterations, 3, "frontier: PPO against the gold, 4 KL coefficients"),
            ev24(256, sweep_kl * evals_ppo, 6, "their evaluations"),
            Use(bon_points, 256 / 8, 2, "frontier: best-of-n, 256 prompts x 128 samples")]},
        "06_beyond_dpo": {"step": Use(dpo_at(u05, "dpo_step_06"), 1, 4, "one DPO step (ungrouped)"), "uses": [
            pairs(n_train, 2, "train pairs (regenerated unless cached)"),
            pairs(n_test, 2, "test pairs (regenerated unless cached)"),
            ev48(n_test, 1, 2, "the base policy"),
            Use(dpo_at(u05n, "dpo_step_05n"), 3 * 600, 3, "DPO, cDPO, IPO on 4,096 noisy pairs, 600 steps each"),
            ev48(n_test, 3 * 3, 6, "their evaluations (3 each)"),
            Use(dpo_at(u05, "dpo_step_06"), 2 * 600, 4, "offline DPO and SimPO, 600 steps each"),
            ev48(n_test, 2 * 4, 7, "their evaluations (4 each)"),
            Use(lengths, 3, 4, "completion lengths: 3 policies x 500 prompts in one call"),
            Use(c["rm_step"], rm.steps, 4, "reward model for the online labeller"),
            Use(c["score_pairs"], 512 / 128, 5, "its agreement on 512 test pairs"),
            Use(c["online_sample"], online.rounds, 6, f"online DPO: {online.rounds} rounds of sampling"),
            Use(dpo_at(2 * 64, "dpo_step_online"), online.rounds * online_steps, 6,
                f"online DPO: {online_steps} steps per round"),
            ev48(n_test, online.rounds, 6, "online DPO's evaluations"),
            Use(grpo_demo, 1, 6, "GRPO advantages demo")]},
    }, {"dpo_unique_per_batch": {"05": round(u04, 2), "06_noisy": round(u05n, 2), "06": round(u05, 2),
                                 "05_heldout_batches": held, "05_debug": u_try}}


# ---------------------------------------------------------------------------- estimates and the report
def estimate_seconds(uses: list[Use], gpu: dict, precision: str, gold_rate: float) -> float:
    """FLOPs at an assumed share of peak, plus sampling launches, optimizer memory traffic and the gold's CPU time."""
    rate = gpu[f"{precision}_peak"] * UTILISATION[precision]
    return sum(u.flops() for u in uses) / rate + sum(u.overheads(gpu, gold_rate) for u in uses)


def fmt_time(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def gold_rate(gold) -> float:
    """Texts per CPU second the gold classifier scores here (prompt + two completions: about 48 tokens of text);
    CPU time, not wall, so other jobs on this machine do not slow the figure."""
    from alignlab.data import stored_pairs
    texts = [r["prompt"] + r["chosen"] + r["rejected"] for r in stored_pairs("train")[:4000]]
    gold(texts[:200])
    start = time.process_time()
    gold(texts)
    return len(texts) / (time.process_time() - start)


def report(w: World, calls: dict[str, Call], books: dict, extra: dict, arithmetic: dict, machine: str, calib: dict,
           rate: float, wall: float) -> tuple[str, dict]:
    P = w.param_bytes
    cpu = sum(r.get("cpu_s", 0) for c in calls.values() for r in c.results)
    lines = ["# gpt2 track at its real shapes (benchmarks/gpu_shapes.py)", "",
             f"Machine: {machine}; calibration: {json.dumps(calib)}; torch {torch.__version__}; "
             f"this run {wall:.0f} s wall, its measured calls {cpu:.0f} s of CPU time (2 threads).",
             f"Model: GPT-2-124M-shaped ({w.params / 1e6:.1f}M parameters, {P / GiB:.3f} GiB in float32), "
             f"prompts of up to {w.prompt_width} tokens, every completion full length.", ""]
    rows, out_books, breakdown = [], {}, []
    t4 = GPUS["T4"]
    for name, nb in books.items():
        uses, step = nb["uses"], nb["step"]
        total = sum(u.flops() for u in uses) or 1.0
        top = sorted(uses, key=lambda u: -u.flops())[:4]
        breakdown.append(f"- {name}: " + "; ".join(
            f"{u.note} {u.flops() / 1e15:.2f} PFLOP ({u.flops() / total:.0%}, "
            f"{fmt_time(estimate_seconds([u], t4, 'fp32', rate))})" for u in top if u.flops() > 0))
        peak_use = max(uses, key=lambda u: u.peak_bytes(P))
        est = {f"{g}_{prec}": estimate_seconds(uses, GPUS[g], prec, rate) for g in GPUS for prec in ("fp32", "half")}
        flops = sum(u.flops() for u in uses)
        out_books[name] = {
            "step": {"call": step.call.name, "what": step.call.what, "gflop": step.call.step_flops() / 1e9,
                     "peak_gib": step.peak_bytes(P) / GiB, "resident_models": step.resident},
            "peak_gib": peak_use.peak_bytes(P) / GiB, "peak_at": f"{peak_use.call.name}: {peak_use.note}",
            "run_pflop": flops / 1e15, "estimated_seconds": {k: round(v) for k, v in est.items()},
            "uses": [{"call": u.call.name, "note": u.note, "count": round(u.count, 2), "resident_models": u.resident,
                      "pflop": u.flops() / 1e15, "peak_gib": round(u.peak_bytes(P) / GiB, 2)} for u in uses]}
        rows.append(f"| {name} | {step.call.name}: {step.note} | {step.peak_bytes(P) / GiB:.1f} | "
                    f"{step.call.step_flops() / 1e12:.2f} | {peak_use.peak_bytes(P) / GiB:.1f} ({peak_use.call.name}) | "
                    f"{flops / 1e15:.2f} | {fmt_time(est['T4_fp32'])} | {fmt_time(est['H100_fp32'])} | "
                    f"{fmt_time(est['T4_half'])} / {fmt_time(est['H100_half'])} |")
    for name, g in arithmetic.items():
        rows.append(f"| {name} | one {g['what']} ({g['config']['prompts_per_step']} problems x "
                    f"{g['config']['group_size']} samples, {g['params'] / 1e6:.2f}M-parameter arithmetic model) | "
                    f"{g['peak_bytes'] / GiB:.3f} | {g['step_flops'] / 1e12:.5f} | same | {g['run_flops'] / 1e15:.5f} | "
                    f"CPU on every track (select_track('tiny')): {g['step_wall_s']:.2f} s per step here | | |")
    rows.sort(key=lambda row: row.split("|")[1])            # in the course's order
    lines += ["ESTIMATES for GPU times (not measurements): FLOPs at "
              f"{UTILISATION['fp32']:.0%} of fp32 peak (the code as it is: float32, no TF32, no autocast; "
              f"{GPUS['T4']['note']}; {GPUS['H100']['note']}), the last column at {UTILISATION['half']:.0%} of the "
              "fp16/bf16 peak if the loops used mixed precision; plus "
              f"{GPUS['T4']['decode_step_s'] * 1000:.0f} ms (T4) / {GPUS['H100']['decode_step_s'] * 1000:.0f} ms (H100) "
              f"of launches per sampled token, AdamW's ~{ADAM_BYTES_PER_PARAM} bytes per parameter per step at "
              f"memory bandwidth, and the gold classifier's CPU time ({rate:,.0f} texts/s measured here). "
              "Peak memory: live tensor bytes (models held + the call's own), as torch.cuda.max_memory_allocated "
              "counts them, without the CUDA context (~0.3-0.5 GB) and allocator slack; extrapolated from two "
              "small sizes of the real call. Whole runs count pair regeneration (as in a fresh Colab runtime; "
              "cached across notebooks on one machine).", "",
              "| notebook | one step | step peak GiB (est.) | step TFLOP | notebook peak GiB (est., where) | run PFLOP | "
              "T4 fp32 (est.) | H100 fp32 (est.) | T4 fp16 / H100 bf16 (est.) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |", *rows, "",
              "Where the FLOPs go (the largest parts of each notebook's run, estimated T4 fp32 time of each):", "",
              *breakdown, "",
              "Calls measured (the library's functions at the real lengths, on few sequences; scaled to one "
              "full-size step; wall time includes waiting for other jobs on this machine, CPU time is this "
              "process's):", "",
              "| call | full-size step | sizes run | wall / CPU s here | FLOPs/token ratio (1 = linear) | step TFLOP | "
              "peak above inputs GiB (part) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in calls.values():
        s = c.summary()
        times = ", ".join("%.0f / %.0f" % (r["wall_s"], r["cpu_s"]) for r in c.results)
        lines.append(f"| {c.name} | {c.what} | {', '.join(str(r['size']) for r in c.results)} | "
                     f"{times} | {s['flops_per_token_ratio']} | "
                     f"{s['step_gflop'] / 1e3:.3f} | {s['transient_gib']:.2f} ({s['peak_part']}) |")
    data = {"machine": machine, "calibration": calib, "torch": torch.__version__, "wall_s": round(wall, 1),
            "model": {"params": w.params, "param_bytes": P, "prompt_width": w.prompt_width},
            "assumptions": {"gpus": GPUS, "utilisation": UTILISATION, "adam_bytes_per_param": ADAM_BYTES_PER_PARAM,
                            "gold_texts_per_s": round(rate)},
            "notebooks": out_books, "arithmetic_notebooks": arithmetic, "dpo_batches": extra,
            "calls": {name: c.summary() for name, c in calls.items()}}
    return "\n".join(lines), data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "build" / "gpt2-local")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_shapes.json")
    ap.add_argument("--only", nargs="*", help="measure only these calls and print them (no report; for development)")
    ap.add_argument("--raw", type=Path, default=ROOT / "build" / "gpu_shapes_raw.json",
                    help="where the measurements are kept before the report is composed")
    ap.add_argument("--report-only", action="store_true", help="compose the report from --raw without measuring")
    args = ap.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)
    if not (args.model / "config.json").exists():
        import make_local_gpt2
        make_local_gpt2.main(args.model)
    os.environ["ALIGNLAB_CACHE"] = tempfile.mkdtemp(prefix="alignlab-gpu-shapes-")   # pairs of this random model
    from calibrate import calibration, machine_line
    machine, calib = (machine_line(), calibration()) if not args.report_only else (None, None)
    print(f"{machine}; {json.dumps(calib)}", file=sys.stderr, flush=True)
    _install_probes()
    world = World(args.model)
    calls = build_calls(world)
    if args.report_only:
        raw = json.loads(args.raw.read_text())
        machine, calib, arithmetic, rate = raw["machine"], raw["calibration"], raw["arithmetic"], raw["gold_rate"]
        for name, call in calls.items():
            call.results = raw["calls"][name]
        start -= raw["wall_s"]
    else:
        if args.only:
            calls = {k: v for k, v in calls.items() if k in args.only}
        for call in calls.values():
            t0 = time.perf_counter()
            call.measure()
            s = call.summary()
            print(f"{call.name}: {time.perf_counter() - t0:.0f} s, step {s['step_gflop'] / 1e3:.3f} TFLOP, "
                  f"+{s['transient_gib']:.2f} GiB ({s['peak_part']})", file=sys.stderr, flush=True)
        if args.only:
            print(json.dumps({k: {**c.summary(), "measured": c.results} for k, c in calls.items()}, indent=1,
                             default=str))
            return
        arithmetic = {name: measure_arithmetic(name) for name in ARITHMETIC_NOTEBOOKS}
        rate = gold_rate(world.gold)
        args.raw.parent.mkdir(parents=True, exist_ok=True)
        args.raw.write_text(json.dumps({"machine": machine, "calibration": calib, "arithmetic": arithmetic, "gold_rate": rate,
                                        "wall_s": time.perf_counter() - start,
                                        "calls": {k: c.results for k, c in calls.items()}}, default=str))
    books, extra = notebooks(world, calls)
    text, data = report(world, calls, books, extra, arithmetic, machine, calib, rate, time.perf_counter() - start)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
