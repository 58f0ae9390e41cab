"""What a training run logged: one class for the DPO, PPO and online-DPO loops.

>>> history.column("loss")                 # one value per step (an optimizer step, a PPO iteration, an online round)
>>> history.column("gold", evals=True)     # one value per evaluation
>>> history.final["gold"]                  # the last evaluation
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunHistory:
    """``steps``: one dict per step of the loop; ``evals``: one dict per evaluation (gold, kl, ...)."""

    config: dict = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)    # DPO: step, loss, rewards/...; PPO: iteration, score, ...; online: round, pairs, ...
    evals: list[dict] = field(default_factory=list)    # step (or iteration, round), and what the evaluation returned
    samples: list[tuple[int, list[str]]] = field(default_factory=list)  # (step, a few sampled texts), where a loop keeps them
    heldout: list[dict] = field(default_factory=list)  # cheap held-out measurements between evaluations (DPO: test pairs)
    seconds: float = 0.0                               # wall time of the run, evaluations included

    def column(self, name: str, evals: bool = False) -> list:
        """One field of every step (or, with ``evals=True``, of every evaluation)."""
        rows = self.evals if evals else self.steps
        missing = [i for i, row in enumerate(rows) if name not in row]
        if missing:
            known = sorted({key for row in rows for key in row})
            raise KeyError(f"{name!r} is not logged in {'evals' if evals else 'steps'} (rows {missing[:3]}...); "
                           f"logged fields: {known}")
        return [row[name] for row in rows]

    @property
    def final(self) -> dict:
        """The last evaluation (gold, kl, ...); {} when the run never evaluated."""
        return self.evals[-1] if self.evals else {}


__all__ = ["RunHistory"]
