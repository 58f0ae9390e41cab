"""Comparisons at matched KL (alignlab.compare): interpolation inside a run, means and errors over seeds."""
from __future__ import annotations

import math

import pytest

from alignlab import compare


def run(*points):
    return [{"kl": k, "gold": g} for k, g in points]


def test_a_run_is_read_between_its_own_evaluations_and_never_beyond():
    r = run((0.0, 0.5), (4.0, 0.7), (2.0, 0.65))                 # out of order on purpose
    assert compare.gold_at_kl(r, 1.0) == pytest.approx(0.575)
    assert compare.gold_at_kl(r, 3.0) == pytest.approx(0.675)
    assert compare.gold_at_kl(r, 4.0) == pytest.approx(0.7)
    assert math.isnan(compare.gold_at_kl(r, 5.0)) and math.isnan(compare.gold_at_kl([], 1.0))


def test_means_and_standard_errors_over_seeds_count_only_runs_that_reached_the_kl():
    a = [run((0, 0.5), (4, 0.9)), run((0, 0.5), (4, 0.7)), run((0, 0.5), (2, 0.6))]
    table = compare.compare_at_kl({"A": a}, kls=[2, 4])
    at2, at4 = table["A"]
    assert at2["n"] == 3 and at2["gold"] == pytest.approx((0.7 + 0.6 + 0.6) / 3)
    assert at4["n"] == 2 and at4["gold"] == pytest.approx(0.8)
    assert at4["se"] == pytest.approx(math.sqrt(((0.1 ** 2) * 2) / 1 / 2))      # sample std / sqrt(n)


def test_a_difference_inside_the_noise_is_said_to_be():
    a = [run((0, 0.5), (4, 0.80)), run((0, 0.5), (4, 0.84)), run((0, 0.5), (4, 0.82))]
    b = [run((0, 0.5), (4, 0.79)), run((0, 0.5), (4, 0.83)), run((0, 0.5), (4, 0.81))]
    c = [run((0, 0.5), (4, 0.60)), run((0, 0.5), (4, 0.61)), run((0, 0.5), (4, 0.62))]
    table = compare.compare_at_kl({"A": a, "B": b, "C": c}, kls=[4])
    assert compare.difference(table, "A", "B", 4)["inside_noise"]
    far = compare.difference(table, "A", "C", 4)
    assert not far["inside_noise"] and far["diff"] == pytest.approx(0.21)
    single = compare.compare_at_kl({"A": a[:1], "C": c[:1]}, kls=[4])
    assert compare.difference(single, "A", "C", 4)["inside_noise"]          # one run a side: no claim


def test_the_table_prints_every_method_at_every_kl():
    table = compare.compare_at_kl({"DPO": [run((0, 0.5), (4, 0.8))], "PPO": [run((0, 0.5), (2, 0.6))]}, kls=[2, 4])
    text = compare.format_comparison(table)
    assert "DPO" in text and "PPO" in text and "not reached" in text and "0.650" in text


def test_a_run_is_read_against_a_dense_curve_at_its_own_kl_with_the_prompts_noise():
    curve = [{"kl": 0.0, "gold": 0.5, "se": 0.02}, {"kl": 1.0, "gold": 0.7, "se": 0.04}]
    ppo = [{"kl": 2.0, "gold": 0.9, "se": 0.03}, {"kl": 0.5, "gold": 0.5, "se": 0.03, "it": 5}, {"kl": 0.0, "gold": 0.51}]
    rows = compare.points_at_kl(ppo, curve)
    assert [r["kl"] for r in rows] == [0.0, 0.5]                           # sorted; KL 2 is beyond the curve
    at0, mid = rows
    assert math.isnan(at0["se"]) and at0["inside_noise"]                   # no se: no claim
    assert mid["curve_gold"] == pytest.approx(0.6) and mid["curve_se"] == pytest.approx(0.03)
    assert mid["diff"] == pytest.approx(-0.1) and mid["diff_se"] == pytest.approx(math.sqrt(2) * 0.03)
    assert not mid["inside_noise"] and mid["it"] == 5                      # 0.1 > 2 * 0.042; its own fields kept
    assert compare.points_at_kl(ppo[1:2], curve, z=3.0)[0]["inside_noise"]  # 0.1 < 3 * 0.042


def test_shared_kls_lie_inside_every_run_even_after_rounding():
    methods = {"A": [run((0, 0.5), (1.5286, 0.6))], "B": [run((0, 0.5), (3.0, 0.7)), run((0, 0.5), (2.0, 0.6))]}
    kls = compare.shared_kls(methods)
    assert kls == [0.38, 0.76, 1.14, 1.52]            # rounded down: 1.53 would lie beyond run A
    table = compare.compare_at_kl(methods, kls)
    assert all(not math.isnan(r["gold"]) for rows in table.values() for r in rows)


def test_report_at_kl_says_inside_outside_and_when_one_run_cannot_tell():
    a = [run((0, 0.50), (2, 0.60)), run((0, 0.50), (2, 0.62)), run((0, 0.50), (2, 0.61))]
    far = [run((0, 0.50), (2, 0.80)), run((0, 0.50), (2, 0.81)), run((0, 0.50), (2, 0.79))]
    near = [run((0, 0.50), (2, 0.61)), run((0, 0.50), (2, 0.63)), run((0, 0.50), (2, 0.60))]
    table, text = compare.report_at_kl({"A": a, "far": far, "near": near}, baseline="A", fractions=(1.0,),
                                       also=[("far", "near")])
    assert table["A"][0]["n"] == 3 and table["far"][0]["gold"] == pytest.approx(0.80)
    assert "far minus A: KL 2.00: +0.190 ± 0.008 (outside the noise, t = 2.78)" in text
    assert "near minus A: KL 2.00: +0.003 ± 0.011 (inside the noise, t = 3.18)" in text
    assert "far minus near: KL 2.00: +0.187" in text
    assert "far ends at (KL, gold), seed by seed: (2.00, 0.800), (2.00, 0.810), (2.00, 0.790)" in text
    _, single = compare.report_at_kl({"A": a[:1], "far": far[:1]}, baseline="A", fractions=(1.0,))
    assert "far minus A: KL 2.00: +0.200 (one run a side: the seeds cannot tell)" in single


def test_welch_threshold_is_students_t_with_welchs_degrees_of_freedom():
    three = {"se": 0.01, "n": 3}
    assert compare.welch_threshold(three, three) == 2.78           # df = 4 with equal spreads
    assert compare.welch_threshold(three, {"se": 0.0001, "n": 3}) == 4.30   # one side's spread dominates: df ~ 2
    assert compare.welch_threshold({"se": 0.01, "n": 40}, {"se": 0.01, "n": 40}) == 2.0
    # a difference of 2.4 standard errors is outside the noise at z = 2 but inside a 3-seed t-test
    a = [run((0, 0.5), (1, g)) for g in (0.60, 0.62, 0.64)]
    b = [run((0, 0.5), (1, g)) for g in (0.64, 0.66, 0.68)]
    assert compare.difference(compare.compare_at_kl({"a": a, "b": b}, [1.0]), "b", "a", 1.0)["inside_noise"] is False
    _, text = compare.report_at_kl({"a": a, "b": b}, baseline="a", fractions=(1.0,))
    assert "+0.040 ± 0.016 (inside the noise, t = 2.78)" in text
