"""Notebook 01's displays: annotator simulation and pictures, drawn with whatever Bradley-Terry function they are given."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from alignlab import preference  # noqa: E402


def bt(a, b):
    return torch.sigmoid(a - b)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


class FakeTokenizer:
    def decode(self, ids, skip_special_tokens=False):
        return " ".join(f"w{i}" for i in ids)


def gold_pairs(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)


def test_expected_disagreement_matches_simulated_annotators():
    a, b = gold_pairs()
    g = torch.Generator().manual_seed(1)
    rounds = [preference.simulate_labels(a, b, 0.1, bt, generator=g) for _ in range(20)]
    prefers_a = torch.stack(rounds).double()                    # (20, N)
    wrong = torch.where(a > b, 1 - prefers_a, prefers_a).mean()
    assert abs(preference.expected_disagreement(a, b, 0.1, bt) - float(wrong)) < 0.01


def test_disagreement_goes_from_none_to_a_coin_flip_with_temperature():
    a, b = gold_pairs()
    assert preference.expected_disagreement(a, b, 1e-4, bt) < 0.01
    assert abs(preference.expected_disagreement(a, b, 1e4, bt) - 0.5) < 0.01
    rates = [preference.expected_disagreement(a, b, t, bt) for t in (0.02, 0.1, 0.5)]
    assert rates == sorted(rates)


def test_disagreement_uses_the_given_function_and_skips_ties():
    coin = lambda a, b: torch.full_like(a - b, 0.5)  # noqa: E731
    a = torch.tensor([0.2, 0.5, 0.9])
    b = torch.tensor([0.1, 0.5, 0.3])
    assert preference.expected_disagreement(a, b, 0.1, coin) == pytest.approx(0.5)
    # the tie (0.5, 0.5) is left out: the other two pairs are both "a better", P(wrong) = sigmoid(-1), sigmoid(-6)
    expected = (torch.sigmoid(torch.tensor(-1.0)) + torch.sigmoid(torch.tensor(-6.0))) / 2
    assert preference.expected_disagreement(a, b, 0.1, bt) == pytest.approx(float(expected), rel=1e-6)


def test_pictures_draw_with_the_given_function():
    a, b = gold_pairs(200)
    calls = []

    def counting_bt(x, y):
        calls.append(1)
        return bt(x, y)

    assert isinstance(preference.plot_disagreement(a, b, counting_bt, observed=0.15, observed_temperature=0.1),
                      matplotlib.figure.Figure)
    assert isinstance(preference.plot_bradley_terry(counting_bt, 0.2, 0.1, gaps=a - b), matplotlib.figure.Figure)
    assert calls
    rows = [{"prompt_ids": [p], "gold_chosen": float(x), "gold_rejected": float(y)}
            for p, x, y in zip([1, 1, 2, 3, 3, 3], a[:6], b[:6])]
    assert isinstance(preference.plot_pairs_by_prompt(rows, FakeTokenizer()), matplotlib.figure.Figure)
    fig = preference.plot_token_logprobs([["a", "b"], ["c"]], [[-1.0, -2.0], [-0.5]], ["chosen", "rejected"])
    assert len(fig.axes) == 2


def test_explorer_is_an_interact_widget():
    pytest.importorskip("ipywidgets")
    widget = preference.bradley_terry_explorer(bt)
    assert hasattr(widget, "widget") or hasattr(widget, "children")


def test_completion_tokens_reads_the_shifted_mask():
    ids = torch.tensor([7, 8, 9, 10, 0])
    token_logps = torch.tensor([-3.0, -1.0, -2.0, -0.5])
    mask = torch.tensor([0, 0, 1, 1, 0])
    tokens, logps = preference.completion_tokens(ids, token_logps, mask, FakeTokenizer())
    assert tokens == ["w9", "w10"] and logps == [-1.0, -2.0]


def test_show_pair_prints_texts_and_gold(capsys):
    row = {"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3], "gold_chosen": 0.9, "gold_rejected": 0.2,
           "p_chosen": 0.99}
    preference.show_pair(row, FakeTokenizer())
    out = capsys.readouterr().out
    assert "w2" in out and "0.90" in out and "0.20" in out and "0.99" in out


def test_annotator_temperature_is_read_back_from_the_rows():
    a, b = gold_pairs(500)
    rows = [{"gold_chosen": float(x), "gold_rejected": float(y), "p_chosen": float(torch.sigmoid((x - y) / 0.07))}
            for x, y in zip(a, b)]
    assert preference.annotator_temperature(rows) == pytest.approx(0.07, rel=1e-6)


class FixedLogitsPolicy(torch.nn.Module):
    """Every position predicts the same next-token distribution softmax(z), whatever the input."""

    def __init__(self, z):
        super().__init__()
        self.z = torch.nn.Parameter(torch.as_tensor(z, dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None):
        from types import SimpleNamespace
        return SimpleNamespace(logits=self.z.expand(*input_ids.shape, -1))


def _token_logprobs(logits, ids):
    return torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def _sequence_logprob(token_logps, mask, average=False):
    m = mask[:, 1:].to(token_logps.dtype)
    total = (token_logps * m).sum(-1)
    return total / m.sum(-1) if average else total


def test_completion_logprobs_sums_means_lengths_and_eos():
    z = torch.tensor([2.0, 0.0, 0.0, 1.0, -1.0])                     # token 0 is EOS, token 1 the pad
    lp = torch.log_softmax(z, -1).double()
    rows = [{"prompt_ids": [3, 4], "chosen_ids": [2, 0], "rejected_ids": [3, 4, 2, 3]},       # ends / runs out
            {"prompt_ids": [2], "chosen_ids": [4, 4, 3, 0], "rejected_ids": [0]}]
    for batch_size in (1, 2):
        out = preference.completion_logprobs(FixedLogitsPolicy(z), rows, 1, _token_logprobs, _sequence_logprob,
                                             eos_token_id=0, batch_size=batch_size)
        c, r = out["chosen"], out["rejected"]
        assert c["length"].tolist() == [2, 4] and r["length"].tolist() == [4, 1]
        expected = [lp[[2, 0]].sum(), lp[[4, 4, 3, 0]].sum()]
        assert torch.allclose(c["sum"], torch.stack(expected), atol=1e-5)
        assert torch.allclose(c["mean"], torch.stack(expected) / torch.tensor([2.0, 4.0], dtype=torch.float64), atol=1e-5)
        assert torch.allclose(r["sum"], torch.stack([lp[[3, 4, 2, 3]].sum(), lp[0]]), atol=1e-5)
        assert torch.allclose(c["eos"], torch.stack([lp[0], lp[0]]), atol=1e-5)
        assert torch.isnan(r["eos"][0]) and float(r["eos"][1]) == pytest.approx(float(lp[0]), abs=1e-5)
    no_eos = preference.completion_logprobs(FixedLogitsPolicy(z), rows, 1, _token_logprobs, _sequence_logprob)
    assert torch.isnan(no_eos["chosen"]["eos"]).all()


def test_policy_preference_rate_and_the_length_plot_read_completion_logprobs():
    z = torch.tensor([2.0, 0.0, 0.0, 1.0, -1.0])
    rows = [{"prompt_ids": [3], "chosen_ids": [3, 0], "rejected_ids": [3, 3, 3, 0]},          # short: higher sum
            {"prompt_ids": [3], "chosen_ids": [2, 2, 2, 2], "rejected_ids": [3, 0]}]         # lower sum and mean
    policy = FixedLogitsPolicy(z)
    rates = preference.policy_preference_rate(policy, rows, 1, _token_logprobs, _sequence_logprob)
    assert rates == {"sum": 0.5, "average": 0.5}
    scored = preference.completion_logprobs(policy, rows, 1, _token_logprobs, _sequence_logprob, eos_token_id=0)
    fig = preference.plot_logprob_vs_length(scored)
    assert len(fig.axes) == 2 and "correlation" in fig.axes[0].get_title()
