"""Track selection: automatic, overridable, never hangs without a network."""
import socket
import time

import pytest

from alignlab import config
from alignlab.config import select_track


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("ALIGNLAB_TRACK", "ALIGNLAB_GPT2_PATH", "NBGRADER_EXECUTION", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def test_auto_picks_tiny_on_a_cpu():
    track = select_track()
    assert track.name == "tiny" and track.device == "cpu"
    assert "tiny-gpt2" in track.policy


def test_gpt2_without_network_fails_fast_and_names_the_tiny_track():
    start = time.time()
    with pytest.raises(RuntimeError, match="select_track\\('tiny'\\)"):
        select_track("gpt2")      # this machine reaches no hub
    assert time.time() - start < 5


def test_hub_probe_never_waits_longer_than_its_timeout(monkeypatch):
    seen = {}

    def hanging_connect(address, timeout=None):
        seen["timeout"] = timeout
        raise socket.timeout("simulated: no answer")

    monkeypatch.setattr(config.socket, "create_connection", hanging_connect)
    assert config.hub_reachable(timeout=2.0) is False
    assert seen["timeout"] == 2.0


def test_offline_flag_is_respected(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not config.hub_reachable()


def test_environment_variable_overrides(monkeypatch):
    monkeypatch.setenv("ALIGNLAB_TRACK", "tiny")
    assert select_track().name == "tiny"
    with pytest.raises(ValueError, match="unknown track"):
        select_track("gpt3")


def test_local_gpt2_folder_stands_in_for_the_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNLAB_GPT2_PATH", str(tmp_path))
    track = select_track("gpt2")
    assert track.name == "gpt2" and track.policy == str(tmp_path)


def test_grading_mode_uses_the_smallest_scale(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    track = select_track()
    assert track.grading and track.name == "tiny"
    assert track.pick(cpu=200, gpu=2000, grading=3) == 3


def test_pick_scales_by_track():
    tiny = config.Track("tiny", "x", "cpu", False, "")
    gpu = config.Track("gpt2", "gpt2", "cuda", False, "")
    assert tiny.pick(cpu=1, gpu=2, grading=3) == 1
    assert gpu.pick(cpu=1, gpu=2, grading=3) == 2
    assert gpu.pick(cpu=1) == 1


def test_an_explicit_gpt2_with_a_local_folder_uses_it_in_grading_mode(monkeypatch, tmp_path):
    """Grading mode scales the run down; it must not throw away the folder and ask for the Hub."""
    monkeypatch.setenv("ALIGNLAB_GPT2_PATH", str(tmp_path))
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    monkeypatch.setattr(config, "hub_reachable", lambda timeout=2.0: pytest.fail("probed the Hub"))
    by_argument = select_track("gpt2")
    monkeypatch.setenv("ALIGNLAB_TRACK", "gpt2")
    by_environment = select_track()
    for track in (by_argument, by_environment):
        assert track.name == "gpt2" and track.policy == str(tmp_path) and track.grading
        assert track.pick(cpu=200, gpu=2000, grading=3) == 3          # grading scale wins over the gpu size
    auto = select_track("auto")                                        # "auto" under the grader stays tiny
    assert auto.name == "tiny" and auto.grading
