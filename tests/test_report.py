import json
from pathlib import Path

import torch

from alignlab import report
from alignlab.report import record


def test_record_is_a_no_op_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("ALIGNLAB_RECORD", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    writes = []
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: writes.append(self))
    monkeypatch.setattr(report, "open", lambda *a, **k: writes.append(a), raising=False)
    record("x", 1.0)
    assert writes == [] and list(tmp_path.iterdir()) == []


def test_record_collects_figures_and_keeps_earlier_ones(monkeypatch, tmp_path):
    target = tmp_path / "figures.json"
    monkeypatch.setenv("ALIGNLAB_RECORD", str(target))
    record("gold", torch.tensor(0.87))
    record("kl", 9.5)
    record("points", [["DPO", 0.5]])
    data = json.loads(target.read_text())
    assert abs(data["gold"] - 0.87) < 1e-6 and data["kl"] == 9.5 and data["points"] == [["DPO", 0.5]]
