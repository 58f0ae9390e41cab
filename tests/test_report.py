import json

import torch

from alignlab.report import record


def test_record_is_a_no_op_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("ALIGNLAB_RECORD", raising=False)
    record("x", 1.0)
    assert list(tmp_path.iterdir()) == []


def test_record_collects_figures(monkeypatch, tmp_path):
    target = tmp_path / "figures.json"
    monkeypatch.setenv("ALIGNLAB_RECORD", str(target))
    record("gold", torch.tensor(0.87))
    record("kl", 9.5)
    data = json.loads(target.read_text())
    assert abs(data["gold"] - 0.87) < 1e-6 and data["kl"] == 9.5
