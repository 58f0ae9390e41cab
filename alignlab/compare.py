"""Comparing methods fairly: gold reward at matched KL, over seeds, with the noise said out loud.

A method that drifts further from the reference usually scores higher on the gold, so "A beats B" means
nothing unless both are read at the same KL. A run is a list of points ``{"kl", "gold"}`` (its
evaluations along training, as ``frontier.points_from_history`` gives them); a method is a list of runs
(one per seed). ``compare_at_kl`` reads every run at the same KL values by linear interpolation between
its own evaluations (never beyond the KL range the run reached), then averages over seeds with a
standard error.

>>> table = compare_at_kl({"DPO": [run_seed0, run_seed1, run_seed2], "PPO": [ppo0, ppo1, ppo2]}, kls=[2, 4, 6])
>>> print(format_comparison(table))
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence


def gold_at_kl(run: Sequence[Mapping], kl: float) -> float:
    """The run's gold at sequence KL ``kl``, interpolated linearly between its evaluations sorted by KL.

    NaN when ``kl`` lies outside the KL range the run's evaluations span (no extrapolation).
    """
    points = sorted((float(p["kl"]), float(p["gold"])) for p in run)
    if not points or not points[0][0] <= kl <= points[-1][0]:
        return math.nan
    for (k0, g0), (k1, g1) in zip(points, points[1:]):
        if k0 <= kl <= k1:
            return g0 if k1 == k0 else g0 + (g1 - g0) * (kl - k0) / (k1 - k0)
    return points[-1][1]                                   # a single point exactly at kl


def compare_at_kl(methods: Mapping[str, Sequence[Sequence[Mapping]]], kls: Sequence[float]) -> dict:
    """Each method's gold at each KL in ``kls``: mean over its runs, standard error, and how many runs reached it.

    Returns ``{method: [{"kl", "gold", "se", "n"}, ...]}``; ``se`` is NaN with fewer than two runs, and
    ``gold`` is NaN where no run reached that KL.
    """
    table = {}
    for method, runs in methods.items():
        rows = []
        for kl in kls:
            values = [g for g in (gold_at_kl(run, kl) for run in runs) if not math.isnan(g)]
            n = len(values)
            mean = sum(values) / n if n else math.nan
            se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else math.nan
            rows.append({"kl": float(kl), "gold": mean, "se": se, "n": n})
        table[method] = rows
    return table


def difference(table: Mapping[str, Sequence[Mapping]], a: str, b: str, kl: float, z: float = 2.0) -> dict:
    """Method ``a`` minus method ``b`` at ``kl`` (a KL of the table), with its standard error, and whether the
    difference is inside the noise (``|diff| < z * se``; with fewer than two runs a side, always inside)."""
    row_a = next(r for r in table[a] if r["kl"] == float(kl))
    row_b = next(r for r in table[b] if r["kl"] == float(kl))
    diff = row_a["gold"] - row_b["gold"]
    se = math.sqrt(row_a["se"] ** 2 + row_b["se"] ** 2)
    inside = math.isnan(se) or math.isnan(diff) or abs(diff) < z * se
    return {"kl": float(kl), "diff": diff, "se": se, "inside_noise": inside}


def points_at_kl(run: Sequence[Mapping], curve: Sequence[Mapping], z: float = 2.0) -> list[dict]:
    """Each point of ``run`` against ``curve`` read at the point's own KL, with evaluation noise: one seed a side.

    ``run`` and ``curve``: lists of ``{"kl", "gold", "se"}``, ``se`` the standard error of that gold over
    the prompts it was measured on (NaN when missing). ``curve`` should be dense in KL (e.g. best-of-n for
    every n): it is read by linear interpolation (``gold_at_kl``), its ``se`` too (the value for fully
    correlated errors, an upper bound on the interpolation's). Points of ``run`` outside the curve's KL
    range are left out (no extrapolation). Returns, per kept point in order of KL, the point's own fields
    (e.g. its iteration) with ``"kl", "gold", "se", "curve_gold", "curve_se", "diff", "diff_se"`` and
    ``"inside_noise"``: ``diff`` = gold - curve_gold, ``diff_se`` the two errors added in quadrature,
    ``inside_noise`` when ``|diff| < z * diff_se`` (always, when ``diff_se`` is NaN). The noise is the
    prompts' only: a second seed of either method is not in it.
    """
    ses = [{"kl": p["kl"], "gold": p.get("se", math.nan)} for p in curve]
    out = []
    for p in sorted(run, key=lambda p: float(p["kl"])):
        kl = float(p["kl"])
        curve_gold = gold_at_kl(curve, kl)
        if math.isnan(curve_gold):
            continue
        se, curve_se = float(p.get("se", math.nan)), gold_at_kl(ses, kl)
        diff, diff_se = float(p["gold"]) - curve_gold, math.sqrt(se ** 2 + curve_se ** 2)
        out.append({**p, "kl": kl, "gold": float(p["gold"]), "se": se, "curve_gold": curve_gold, "curve_se": curve_se,
                    "diff": diff, "diff_se": diff_se,
                    "inside_noise": math.isnan(diff_se) or abs(diff) < z * diff_se})
    return out


def format_comparison(table: Mapping[str, Sequence[Mapping]]) -> str:
    """A plain-text table: one row per KL, one column per method (gold ± se, and the runs that reached it)."""
    methods = list(table)
    kls = [r["kl"] for r in next(iter(table.values()))] if table else []

    def cell(r):
        if math.isnan(r["gold"]):
            return "not reached"
        se = "" if math.isnan(r["se"]) else f" ± {r['se']:.3f}"
        return f"{r['gold']:.3f}{se} (n={r['n']})"
    lines = ["KL (nats) | " + " | ".join(methods)]
    for i, kl in enumerate(kls):
        lines.append(f"{kl:9.2f} | " + " | ".join(cell(table[m][i]) for m in methods))
    return "\n".join(lines)


def shared_kls(methods: Mapping[str, Sequence[Sequence[Mapping]]],
               fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0)) -> list[float]:
    """KL values every run of every method reached: ``fractions`` (at most 1) of the smallest largest-KL among
    the runs, rounded down to 0.01 nats (so a printed KL is the one the table used, and none lies beyond a run)."""
    reach = min(max(float(p["kl"]) for p in run) for runs in methods.values() for run in runs)
    return [math.floor(max(0.0, reach) * f * 100) / 100 for f in fractions]


T_975 = (12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14, 2.13, 2.12, 2.11,
         2.10, 2.09, 2.09, 2.08, 2.07, 2.07, 2.06, 2.06, 2.06, 2.05, 2.05, 2.05, 2.04)   # Student's t, 97.5%, df 1-30


def welch_threshold(row_a: Mapping, row_b: Mapping) -> float:
    """How many standard errors a difference of two means must exceed to be outside the noise (two-sided 5%):
    Student's t at 97.5% with Welch's degrees of freedom, rounded down (2.78 for three seeds a side with
    equal spreads, up to 4.30 when one side's spread dominates; about 2 from 30 on). Rows are
    ``compare_at_kl``'s (``se`` over ``n`` seeds)."""
    va, vb = row_a["se"] ** 2, row_b["se"] ** 2
    denominator = va ** 2 / (row_a["n"] - 1) + vb ** 2 / (row_b["n"] - 1)
    df = (va + vb) ** 2 / denominator if denominator > 0 else 1.0
    return T_975[min(len(T_975), max(1, int(df))) - 1] if df < 31 else 2.0


def report_at_kl(methods: Mapping[str, Sequence[Sequence[Mapping]]], baseline: str,
                 fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                 also: Sequence[tuple[str, str]] = ()) -> tuple[dict, str]:
    """Compare methods at matched KL and say what the seeds can tell: ``(table, text)``.

    ``methods``: ``{name: [run, ...]}``, one run (a list of ``{"kl", "gold"}`` points) per seed. The KLs are
    ``shared_kls``: every run reached them, so nothing is extrapolated. The text is ``format_comparison``'s
    table, then each method minus ``baseline`` at each KL with its standard error over seeds and whether it
    is outside the noise: ``|diff| > t * se`` with ``t`` from ``welch_threshold`` (a t-test at 5%, two-sided;
    with few seeds only large differences get out). With one run a side the seeds cannot tell, and the
    text says so. ``also``: more ``(a, b)`` pairs to print as a minus b, e.g. two methods that differ in one factor.
    Last, each run's final point (its last evaluation), seed by seed: how far each method went.
    """
    kls = shared_kls(methods, fractions)
    table = compare_at_kl(methods, kls)
    seeds = sorted({len(runs) for runs in methods.values()})
    lines = [format_comparison(table), f"runs (seeds) per method: {', '.join(map(str, seeds))}; ± is one standard "
             "error over the seeds; a difference is outside the noise when it exceeds t standard errors "
             "(Welch's t-test at 5%: t is 2.78 to 4.30 for three seeds a side)"]
    for name, other in [(name, baseline) for name in table if name != baseline] + list(also):
        parts = []
        for i, kl in enumerate(kls):
            d = difference(table, name, other, kl)
            if math.isnan(d["diff"]):
                parts.append(f"KL {kl:.2f}: not reached by every run")
            elif math.isnan(d["se"]):
                parts.append(f"KL {kl:.2f}: {d['diff']:+.3f} (one run a side: the seeds cannot tell)")
            else:
                t = welch_threshold(table[name][i], table[other][i])
                verdict = "outside" if abs(d["diff"]) > t * d["se"] else "inside"
                parts.append(f"KL {kl:.2f}: {d['diff']:+.3f} ± {d['se']:.3f} ({verdict} the noise, t = {t:.2f})")
        lines.append(f"{name} minus {other}: " + "; ".join(parts))
    for name, runs in methods.items():
        ends = ", ".join(f"({run[-1]['kl']:.2f}, {run[-1]['gold']:.3f})" for run in runs)
        lines.append(f"{name} ends at (KL, gold), seed by seed: {ends}")
    return table, "\n".join(lines)


__all__ = ["gold_at_kl", "compare_at_kl", "difference", "points_at_kl", "format_comparison", "shared_kls",
           "report_at_kl", "welch_threshold"]
