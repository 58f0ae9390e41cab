"""Models: loading by path or Hub id (tested offline on a GPT-2-shaped folder), reward model, value head."""
import shutil

import pytest
import torch

from alignlab import paths
from conftest import save_gpt2_shaped
from alignlab.config import Track
from alignlab.models import (PolicyWithValue, RewardModel, frozen_copy, load_policy, load_tokenizer,
                             position_ids_from_mask)




@pytest.fixture(scope="module")
def gpt2_shaped(tmp_path_factory):
    """A folder laid out like the Hub's "gpt2": random GPT2LMHeadModel + byte-level BPE tokenizer, no pad token."""
    folder = tmp_path_factory.mktemp("gpt2-like")
    return save_gpt2_shaped(folder, ["a good film", "a bad film", "the plot was thin"] * 5, vocab_size=300)


@pytest.fixture(scope="module")
def tiny():
    return load_policy(paths.TINY_POLICY_DIR), load_tokenizer(paths.TINY_POLICY_DIR)


def test_tiny_tokenizer_has_eos_and_a_distinct_pad(tiny):
    _, tok = tiny
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id is not None
    assert tok.pad_token_id != tok.eos_token_id


def test_tiny_policy_loads_from_a_track_or_a_path(tiny):
    policy, tok = tiny
    track = Track("tiny", str(paths.TINY_POLICY_DIR), "cpu", False, "test")
    again = load_policy(track)
    assert type(again).__name__ == "GPT2LMHeadModel" and not again.training
    assert again.config.pad_token_id == tok.pad_token_id and again.config.eos_token_id == tok.eos_token_id
    assert torch.equal(again.transformer.wte.weight, policy.transformer.wte.weight)


def test_tiny_policy_has_no_dropout_so_train_and_eval_forwards_agree(tiny):
    policy, _ = tiny
    ids = torch.tensor([[10, 11, 12, 13]])
    with torch.no_grad():
        a = policy.eval()(ids).logits
        b = policy.train()(ids).logits
    policy.eval()
    torch.testing.assert_close(a, b)


def test_default_reward_index_is_the_reference_last_token_index():
    from alignlab.reference import last_token_index
    assert RewardModel.from_policy(paths.TINY_POLICY_DIR).last_index_fn is last_token_index


def test_tokenizer_without_pad_gets_a_distinct_pad_and_the_model_is_resized(gpt2_shaped):
    tok = load_tokenizer(str(gpt2_shaped))
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id != tok.eos_token_id
    policy = load_policy(str(gpt2_shaped))
    assert policy.get_input_embeddings().num_embeddings == len(tok)
    assert policy.config.pad_token_id == tok.pad_token_id
    ids = torch.tensor([[tok.pad_token_id, 5, 6]])
    assert torch.isfinite(policy(ids).logits).all()


def test_loading_writes_nothing_to_stderr(gpt2_shaped, capfd):
    """nbgrader zeroes a test cell that writes to stderr: no progress bar, no resize notice."""
    capfd.readouterr()
    load_policy(str(gpt2_shaped))
    load_policy(paths.TINY_POLICY_DIR)
    assert capfd.readouterr().err == ""


def test_hub_id_without_network_fails_fast_naming_the_tiny_track(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"select_track\('tiny'\)"):
        load_tokenizer("gpt2-this-id-is-not-cached")


def test_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data"):
        load_policy(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match="tiny"):
        load_tokenizer(str(tmp_path / "no-such-model"))


def test_corrupt_folder_says_what_to_do(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(paths.TINY_POLICY_DIR, broken)
    (broken / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(RuntimeError, match="make data"):
        load_policy(broken)
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="corrupt"):
        load_tokenizer(broken)


def test_frozen_copy_is_eval_without_gradients_and_independent():
    policy = load_policy(paths.TINY_POLICY_DIR).train()
    ref = frozen_copy(policy)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    assert policy.training and all(p.requires_grad for p in policy.parameters())
    with torch.no_grad():
        policy.transformer.wte.weight[0, 0] += 1.0
    assert not torch.equal(ref.transformer.wte.weight, policy.transformer.wte.weight)


def test_position_ids_follow_the_mask():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 2]]


def _pad(rows, pad, side):
    T = max(map(len, rows))
    ids = torch.full((len(rows), T), pad)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(0, len(r)) if side == "right" else slice(T - len(r), T)
        ids[i, cols], mask[i, cols] = torch.tensor(r), 1
    return ids, mask


def test_reward_model_reads_the_last_real_token_on_either_padding_side():
    rm = RewardModel.from_policy(paths.TINY_POLICY_DIR).eval()
    rows = [[10, 11, 12, 13, 14], [20, 21], [30, 31, 32]]
    with torch.no_grad():
        right = rm(*_pad(rows, 1, "right"))
        left = rm(*_pad(rows, 1, "left"))
        alone = torch.cat([rm(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long)) for r in rows])
    assert right.shape == (3,) and right.dtype == torch.float32
    torch.testing.assert_close(right, alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(left, alone, atol=1e-4, rtol=1e-4)


def test_reward_model_uses_the_given_last_index_fn_and_copies_the_policy_backbone(tiny):
    policy, _ = tiny
    first = RewardModel.from_policy(paths.TINY_POLICY_DIR, last_index_fn=lambda m: torch.zeros(m.shape[0]).long())
    assert torch.equal(first.backbone.wte.weight, policy.transformer.wte.weight)
    ids, mask = _pad([[10, 11, 12], [10, 40, 41, 42]], 1, "right")
    with torch.no_grad():
        r = first.eval()(ids, mask)
    torch.testing.assert_close(r[0], r[1])            # both read token 10 at position 0


def test_reward_model_refuses_an_all_zero_mask_row():
    rm = RewardModel.from_policy(paths.TINY_POLICY_DIR)
    ids, mask = _pad([[10, 11], [12]], 1, "right")
    mask[1] = 0
    with pytest.raises(ValueError, match="all zeros"):
        rm(ids, mask)


def test_too_long_or_empty_batches_get_clear_errors(tiny):
    policy, _ = tiny
    rm, pv = RewardModel(policy.transformer), PolicyWithValue(policy)
    long = torch.ones(1, 65, dtype=torch.long)
    for model in (rm, pv):
        with pytest.raises(ValueError, match="context of 64"):
            model(long, torch.ones_like(long))
        with pytest.raises(ValueError, match="non-empty"):
            model(long[:0], long[:0])


def test_policy_with_value_shapes_and_padding(tiny):
    policy, tok = tiny
    pv = PolicyWithValue(frozen_copy(policy).requires_grad_(True)).eval()
    ids, mask = _pad([[10, 11, 12, 13], [20, 21]], tok.pad_token_id, "left")
    with torch.no_grad():
        logits, values = pv(ids, mask)
        single, _ = pv(torch.tensor([[20, 21]]), torch.ones(1, 2, dtype=torch.long))
    assert logits.shape == (2, 4, len(tok)) and values.shape == (2, 4) and values.dtype == torch.float32
    assert (values == 0).all()                        # the value head starts at zero
    torch.testing.assert_close(logits[1, 2:], single[0], atol=1e-4, rtol=1e-4)
    pv.train()
    _, values = pv(ids, mask)
    values.sum().backward()
    assert pv.value_head.weight.grad is not None


def test_a_value_model_copied_from_a_reward_model_scores_every_position(tiny):
    """TRL's layout: values[:, t] = (reward model's head at t - shift) / scale; the reward model itself stays as it was."""
    policy, tok = tiny
    rm = RewardModel(frozen_copy(policy).transformer).eval()
    for p in rm.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in rm.state_dict().items()}

    class Normalized:                                   # what alignlab.ppo.ModelReward carries
        reward_model, shift, scale = rm, 0.5, 2.0

    pv = PolicyWithValue.around(frozen_copy(policy).requires_grad_(True), Normalized()).eval()
    ids, mask = _pad([[10, 11, 12, 13], [20, 21]], tok.pad_token_id, "right")
    logits, values = pv(ids, mask)
    assert logits.shape == (2, 4, len(tok)) and values.shape == (2, 4)
    with torch.no_grad():
        at_end = (rm(ids, mask) - 0.5) / 2.0            # the reward of the whole text, normalized
    torch.testing.assert_close(values[torch.arange(2), torch.tensor([3, 1])].detach(), at_end, atol=1e-5, rtol=1e-5)
    values.sum().backward()
    assert pv.value_model.head.weight.grad is not None and rm.head.weight.grad is None
    assert not hasattr(pv, "value_head")
    for k, v in rm.state_dict().items():
        torch.testing.assert_close(v, before[k])
    with pytest.raises(TypeError, match="value_from"):
        PolicyWithValue.around(frozen_copy(policy), value_from="gold")


def test_fast_forward_settings_change_the_cost_not_the_numbers():
    """The fused tanh GELU and no KV cache in scoring forwards give GPT-2's own outputs (to float rounding)."""
    from transformers import AutoModelForCausalLM

    from alignlab import paths
    from alignlab.models import fast_forward_settings, load_policy

    plain = AutoModelForCausalLM.from_pretrained(str(paths.TINY_POLICY_DIR)).eval()
    assert plain.config.activation_function == "gelu_new"
    fast = load_policy(paths.TINY_POLICY_DIR)
    assert fast.config.activation_function == "gelu_pytorch_tanh" and fast.config.use_cache is False
    ids = torch.randint(0, 4000, (4, 12))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        torch.testing.assert_close(fast(input_ids=ids, attention_mask=mask).logits,
                                   plain(input_ids=ids, attention_mask=mask).logits, atol=1e-4, rtol=1e-4)
    assert fast_forward_settings(torch.nn.Linear(2, 2)).weight.shape == (2, 2)   # not a GPT-2: untouched
