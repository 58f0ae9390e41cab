"""Notebook 05's debugging exercise: the checks reject the planted bugs and accept every honest fix."""
from __future__ import annotations

import copy

import pytest
import torch

from alignlab import checks
from alignlab import reference as course
from alignlab.dpo import pair_logps
from alignlab.models import frozen_copy


# ------------------------------------------------------------ make_reference
def buggy_reference(policy):                  # the planted bug: the "reference" is the policy itself
    return policy


def unfrozen_copy(policy):
    return copy.deepcopy(policy).eval()


def training_mode_copy(policy):
    return copy.deepcopy(policy).train().requires_grad_(False)


def freezes_the_policy(policy):
    policy.requires_grad_(False)
    return copy.deepcopy(policy).eval()


def shallow_module(policy):                   # a new module object around the very same tensors
    ref = copy.copy(policy)
    return ref.eval()


def deepcopy_frozen(policy):
    ref = copy.deepcopy(policy)
    for p in ref.parameters():
        p.requires_grad = False
    ref.eval()
    return ref


@pytest.mark.parametrize("wrong, message", [
    (buggy_reference, "shares its weights"),
    (shallow_module, "shares its weights"),
    (unfrozen_copy, "require grad"),
    (training_mode_copy, "training mode"),
    (freezes_the_policy, "froze the policy"),
])
def test_make_reference_rejects_wrong_references(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.make_reference(wrong, hidden=True)


@pytest.mark.parametrize("right", [frozen_copy, deepcopy_frozen])
def test_make_reference_accepts_frozen_copies(right, capfd):
    checks.make_reference(right)
    checks.make_reference(right, hidden=True)
    out, err = capfd.readouterr()
    assert "passed" in out and err == ""


def test_make_reference_says_not_implemented():
    def todo(policy):
        raise NotImplementedError
    with pytest.raises(AssertionError, match="not implemented"):
        checks.make_reference(todo)


# ------------------------------------------------------------ dpo_training_step
def inline_loss(pc, pr, rc, rr, beta):          # the notebook's step computes the loss itself (no detaching helper)
    return -torch.nn.functional.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def step_with_course_loss(policy, reference, optimizer, batch, beta):   # course.dpo_loss detaches the reference
    pc, pr = pair_logps(policy, batch)
    rc, rr = pair_logps(reference, batch)
    loss, _, _ = course.dpo_loss(pc, pr, rc, rr, beta)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def buggy_step(policy, reference, optimizer, batch, beta):       # the planted bug: reference log-probs carry gradient
    pc, pr = pair_logps(policy, batch)
    rc, rr = pair_logps(reference, batch)
    loss = inline_loss(pc, pr, rc, rr, beta)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def steps_the_reference_too(policy, reference, optimizer, batch, beta):
    pc, pr = pair_logps(policy, batch)
    rc, rr = pair_logps(reference, batch)
    loss = inline_loss(pc, pr, rc, rr, beta)
    both = torch.optim.SGD(list(policy.parameters()) + list(reference.parameters()), lr=optimizer.param_groups[0]["lr"])
    both.zero_grad()
    loss.backward()
    both.step()
    return loss.item()


def no_step(policy, reference, optimizer, batch, beta):
    pc, pr = pair_logps(policy, batch)
    with torch.no_grad():
        rc, rr = pair_logps(reference, batch)
    loss = inline_loss(pc, pr, rc, rr, beta)
    return loss.item()


def reference_ignored(policy, reference, optimizer, batch, beta):
    pc, pr = pair_logps(policy, batch)
    loss = -torch.nn.functional.logsigmoid(beta * (pc - pr)).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def loss_after_the_step(policy, reference, optimizer, batch, beta):
    fixed_step(policy, reference, optimizer, batch, beta)
    pc, pr = pair_logps(policy, batch)
    with torch.no_grad():
        rc, rr = pair_logps(reference, batch)
    return inline_loss(pc, pr, rc, rr, beta).item()


def fixed_step(policy, reference, optimizer, batch, beta):
    pc, pr = pair_logps(policy, batch)
    with torch.no_grad():
        rc, rr = pair_logps(reference, batch)
    loss = inline_loss(pc, pr, rc, rr, beta)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def detached_step(policy, reference, optimizer, batch, beta):     # detach instead of no_grad; returns a tensor
    rc, rr = (x.detach() for x in pair_logps(reference, batch))
    pc, pr = pair_logps(policy, batch)
    h = (pc - rc) - (pr - rr)
    loss = -torch.nn.functional.logsigmoid(beta * h).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


@pytest.mark.parametrize("wrong, message", [
    (buggy_step, "gradient reached the reference"),
    (steps_the_reference_too, "weights changed"),
    (no_step, "did not change"),
    (reference_ignored, "expected DPO's"),
    (loss_after_the_step, "expected DPO's"),
])
def test_dpo_training_step_rejects_the_planted_bug_and_other_mistakes(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.dpo_training_step(wrong, hidden=True)


@pytest.mark.parametrize("right", [fixed_step, detached_step, step_with_course_loss])
def test_dpo_training_step_accepts_honest_fixes(right, capfd):
    checks.dpo_training_step(right)
    checks.dpo_training_step(right, hidden=True)
    out, err = capfd.readouterr()
    assert "passed" in out
    assert err == "", "a graded test cell must not write to stderr"


def test_checks_leave_the_learners_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.make_reference(frozen_copy)
    checks.dpo_training_step(fixed_step)
    assert torch.equal(torch.rand(3), expected)


def test_the_hidden_check_names_ln2_when_the_reference_is_the_policy():
    def reference_is_policy(policy, reference, optimizer, batch, beta):
        return fixed_step(policy, policy, optimizer, batch, beta)
    with pytest.raises(AssertionError, match="ln 2"):
        checks.dpo_training_step(reference_is_policy)


def test_checks_export_only_the_two_exercise_checks():
    from alignlab.checks import debugging
    assert debugging.__all__ == ["make_reference", "dpo_training_step"]
