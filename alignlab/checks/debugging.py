"""Notebook 05's debugging exercise: a DPO training step whose reference model is not a reference.

The planted bugs: the "reference" is the policy itself (shared weights), and its
log-probs are computed with gradient. With both, DPO's log-ratios are 0 by
construction: the loss sits at ln 2 and nothing learns. The learner fixes

- ``make_reference(policy) -> model``: a separate, frozen copy (no shared
  storage, no gradient, eval mode), and
- ``dpo_training_step(policy, reference, optimizer, batch, beta) -> float``: one
  optimizer step on the DPO loss of a ``collate_pairs`` batch, with the
  reference's log-probs computed without gradient.

``checks.make_reference(fn)`` and ``checks.dpo_training_step(fn)`` prove the
fix on a small random GPT-2: the reference is unchanged after a step, no
gradient reaches it, the loss is DPO's, and the policy moves as one step of DPO.

Their cases are models and optimizers, not tensors, so these two checks run in the kernel even under the
grader; their verdict is then reported to the judge, which records it as the kernel's own report
(autograder/README.md, "Known limits").
"""
from __future__ import annotations

import copy
import math

import torch

from .. import reference as course_reference
from ..data import collate_pairs
from . import _wire
from ._core import _quiet

__all__ = ["make_reference", "dpo_training_step"]

_VOCAB = 32




def _model(seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    with _quiet(), torch.random.fork_rng(devices=[]):     # leave the learner's random state alone
        torch.manual_seed(seed)
        cfg = GPT2Config(vocab_size=_VOCAB, n_positions=32, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
                         embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=1)
        return GPT2LMHeadModel(cfg).eval()


def _batch(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)

    def ids(lo, hi):
        return torch.randint(3, _VOCAB, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()

    rows = [{"prompt_ids": ids(2, 5), "chosen_ids": ids(1, 7), "rejected_ids": ids(1, 7)} for _ in range(n)]
    return collate_pairs(rows, pad_id=0)


def _call(name: str, fn, *args):
    try:
        with _quiet():
            return fn(*args)
    except NotImplementedError:
        raise AssertionError(f"{name}: not implemented yet. Replace `raise NotImplementedError` with your code, "
                             "run the cell that defines the function, then this one.") from None
    except Exception as error:
        raise AssertionError(f"{name}: your function raised {type(error).__name__}: {error}") from error


def _report(name: str, hidden: bool, passed: bool, message: str) -> None:
    """Under the grader: tell the judge this in-kernel check's verdict (recorded as self-reported)."""
    if _wire.judge_address():
        try:
            _wire.request({"op": "report", "check": name, "hidden": bool(hidden), "passed": bool(passed),
                           "message": message[:20_000]})
        except (OSError, ValueError):
            pass


def _reported(check):
    """``check`` whose verdict, under the grader, is also reported to the judge."""
    def run(fn, hidden: bool = False) -> None:
        try:
            check(fn, hidden)
        except AssertionError as error:
            _report(check.__name__, hidden, False, str(error))
            raise
        _report(check.__name__, hidden, True, f"{check.__name__}: passed")
    run.__name__ = run.__qualname__ = check.__name__
    run.__doc__ = check.__doc__
    return run


def _shares_storage(a, b) -> bool:
    ptrs = {p.data_ptr() for p in a.parameters()}
    return any(p.data_ptr() in ptrs for p in b.parameters())


# ------------------------------------------------------------------ make_reference
@_reported
def make_reference(fn, hidden: bool = False) -> None:
    """Check ``fn(policy)`` returns a frozen copy: equal weights, separate storage, no gradient, eval mode."""
    seeds = (0, 1, 2) if hidden else (0,)
    for seed in seeds:
        policy = _model(seed).train()       # public too: "in eval mode" must be checked on a policy in training mode
        before = {k: v.clone() for k, v in policy.state_dict().items()}
        reference = _call("make_reference", fn, policy)
        if reference is policy or (isinstance(reference, torch.nn.Module) and _shares_storage(policy, reference)):
            raise AssertionError(
                "make_reference: the reference shares its weights with the policy, so every optimizer step moves "
                "it too and log(pi / pi_ref) stays 0. Return a separate copy (copy.deepcopy(policy)).")
        if not isinstance(reference, torch.nn.Module):
            raise AssertionError(f"make_reference: expected a model (torch.nn.Module), got {type(reference).__name__}.")
        if any(not torch.equal(before[k], v) for k, v in policy.state_dict().items()):
            raise AssertionError("make_reference: the policy's weights changed; copy it, do not modify it.")
        state = reference.state_dict()
        if state.keys() != before.keys() or any(not torch.equal(before[k], state[k]) for k in before):
            raise AssertionError("make_reference: the reference's weights differ from the policy's; "
                                 "DPO's reference starts as an exact copy of the policy.")
        if any(p.requires_grad for p in reference.parameters()):
            raise AssertionError("make_reference: some reference parameters still require grad. "
                                 "Freeze them with reference.requires_grad_(False).")
        if any(p.requires_grad is False for p in policy.parameters()):
            raise AssertionError("make_reference: you froze the policy too; only the copy should be frozen.")
        if reference.training:
            raise AssertionError("make_reference: the reference is in training mode (dropout would make its "
                                 "log-probs random). Call reference.eval().")
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(1.0)
        if any(not torch.equal(before[k], v) for k, v in reference.state_dict().items()):
            raise AssertionError("make_reference: changing the policy changed the reference; they must not share tensors.")
    print("make_reference: passed" + (" (hidden cases)" if hidden else "") + ": a separate, frozen copy in eval mode.")


# ------------------------------------------------------------------ dpo_training_step
def _expected_step(policy, reference, batch, beta: float, lr: float):
    """The loss and the policy's weights after one correct SGD step (computed on copies)."""
    from ..dpo import pair_logps

    policy = copy.deepcopy(policy)
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)
    pc, pr = pair_logps(policy, batch)
    with torch.no_grad():
        rc, rr = pair_logps(reference, batch)
    loss, _, _ = course_reference.dpo_loss(pc, pr, rc, rr, beta)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item(), {k: v.detach().clone() for k, v in policy.state_dict().items()}


def _step_case(fn, name: str, batch: dict, beta: float, same_weights: bool, lr: float = 0.5) -> None:
    policy = _model(10)
    reference = _model(10 if same_weights else 11)   # a separate module that (deliberately) still requires grad
    ref_before = {k: v.clone() for k, v in reference.state_dict().items()}
    expected_loss, expected_state = _expected_step(policy, reference, batch, beta, lr)
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)
    got = _call("dpo_training_step", fn, policy, reference, optimizer, batch, beta)
    where = f"\n  case: {name} (beta={beta}, batch of {batch['chosen_input_ids'].shape[0]})"
    if any(not torch.equal(ref_before[k], v) for k, v in reference.state_dict().items()):
        raise AssertionError("dpo_training_step: the reference model's weights changed during the step. Only the "
                             "policy may be updated; its log-probs are a fixed target." + where)
    if any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in reference.parameters()):
        raise AssertionError("dpo_training_step: gradient reached the reference model. Compute the reference's "
                             "log-probs under `with torch.no_grad():` (the reference must not learn)." + where)
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, (int, float)) or not math.isfinite(got):
        raise AssertionError(f"dpo_training_step: expected the loss as a Python float (loss.item()), got {got!r}." + where)
    if abs(got - expected_loss) > 1e-5 + 1e-4 * abs(expected_loss):
        hint = " That is ln 2: the log-ratios are all 0, as when the reference is the policy." \
            if abs(got - math.log(2)) < 1e-6 else ""
        raise AssertionError(f"dpo_training_step: returned loss {got:.6f}, expected DPO's {expected_loss:.6f} "
                             f"(before the step).{hint}" + where)
    state = policy.state_dict()
    worst = max(float((state[k] - v).abs().max()) for k, v in expected_state.items())
    if worst > 1e-4:
        moved = any(not torch.equal(state[k], v) for k, v in _model(10).state_dict().items())
        why = "the policy did not change: call optimizer.zero_grad(), loss.backward(), optimizer.step()" if not moved \
            else "the update is not one step on the DPO loss's gradient"
        raise AssertionError(f"dpo_training_step: {why} (largest weight difference {worst:.2e})." + where)


@_reported
def dpo_training_step(fn, hidden: bool = False) -> None:
    """Check one DPO step: reference unchanged and without gradient, loss correct, policy updated as DPO's step."""
    cases = [("4 pairs, different reference", _batch(4, 0), 0.1, False)]
    if hidden:
        cases += [("1 pair, beta 0.5", _batch(1, 1), 0.5, False),
                  ("reference equal to the policy (loss ln 2)", _batch(6, 2), 0.2, True),
                  ("8 pairs, large beta", _batch(8, 3), 2.0, False)]
    for name, batch, beta, same in cases:
        _step_case(fn, name, batch, beta, same)
    print("dpo_training_step: passed" + (" (hidden cases)" if hidden else "") +
          ": the reference stays fixed and gets no gradient; loss and update are DPO's.")
