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


__all__ = ["gold_at_kl", "compare_at_kl", "difference", "points_at_kl", "format_comparison"]
