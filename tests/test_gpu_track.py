"""The gpt2 track offline: a small GPT-2-shaped model with its own tokenizer in a local folder (ALIGNLAB_GPT2_PATH).

Its tokenizer differs from the tiny one, so the stored prompt ids and pairs do
not apply: load_prompts re-encodes the prompts from their text, load_pairs
regenerates pairs from this policy and caches them. Runs on a CPU in seconds.
"""
import math

import pytest
import torch

from alignlab import config, pairs
from alignlab.data import collate_pairs
from alignlab.pairs import load_pairs, load_prompts
from alignlab.dpo import pair_logps, reference_logps
from alignlab.models import frozen_copy, load_policy, load_tokenizer
from alignlab.reference import dpo_loss
from conftest import save_gpt2_shaped

PAIR_FIELDS = {"split", "prompt", "prompt_ids", "chosen", "chosen_ids", "rejected", "rejected_ids",
               "gold_chosen", "gold_rejected", "p_chosen", "ref_chosen_logps", "ref_rejected_logps"}


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A 2-layer, width-64 GPT-2 and a freshly trained byte-level BPE (GPT-2 style: EOS, no pad token)."""
    folder = tmp_path_factory.mktemp("gpt2-small-local")
    texts = [r["prompt"] for r in load_prompts("train")]                           # short texts: fast
    return save_gpt2_shaped(folder, texts, vocab_size=600, n_layer=2, n_embd=64, n_positions=128)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("alignlab-cache")


@pytest.fixture
def track(gpt2_folder, cache, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_GPT2_PATH", str(gpt2_folder))
    monkeypatch.setenv("ALIGNLAB_CACHE", str(cache))
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    t = config.select_track("gpt2")
    assert t.name == "gpt2" and t.policy == str(gpt2_folder)
    return t


def test_gpt2_track_loads_the_local_folder_with_a_distinct_pad(track):
    tok = load_tokenizer(track)
    policy = load_policy(track)
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert policy.config.pad_token_id == tok.pad_token_id
    assert policy.get_input_embeddings().num_embeddings >= len(tok)   # the new pad row exists
    assert policy.config.n_layer == 2


def test_gpt2_prompts_are_the_stored_texts_in_the_new_tokenizer(track):
    stored, mine = load_prompts("test"), load_prompts("test", track)
    tok = load_tokenizer(track)
    assert len(mine) == len(stored)
    assert [r["prompt"] for r in mine] == [r["prompt"] for r in stored]
    assert all(tok.decode(r["prompt_ids"]) == r["prompt"] for r in mine[:200])
    assert all(0 <= i < len(tok) for r in mine for i in r["prompt_ids"])
    assert sum(r["prompt_ids"] != s["prompt_ids"] for r, s in zip(mine, stored)) > len(mine) // 2  # re-encoded


def test_gpt2_pairs_are_regenerated_with_valid_ids_and_cached(track, capsys, monkeypatch):
    tok = load_tokenizer(track)
    rows = load_pairs("train", track, n=10)                           # 2 prompts x 6 pairs, the first 10
    first = capsys.readouterr()
    assert "Regenerating 12 train pairs" in first.out and first.err == ""
    assert len(rows) == 10 and all(set(r) == PAIR_FIELDS for r in rows)
    prompts = {r["prompt"]: r["prompt_ids"] for r in load_prompts("train", track)}
    for r in rows:
        assert r["split"] == "train" and r["prompt_ids"] == prompts[r["prompt"]]
        assert all(0 <= i < len(tok) and i != tok.pad_token_id for i in r["chosen_ids"] + r["rejected_ids"])
        assert 0 < len(r["chosen_ids"]) <= pairs.MAX_NEW_TOKENS
        assert 0.0 <= r["gold_chosen"] <= 1.0 and 0.0 <= r["p_chosen"] <= 1.0
        assert r["ref_chosen_logps"] < 0 and r["ref_rejected_logps"] < 0
    # The second call reads the cache: no message, no sampling, the same rows.
    monkeypatch.setattr(pairs, "make_pairs", lambda *a, **k: pytest.fail("sampled again instead of using the cache"))
    again = load_pairs("train", track, n=10)
    assert again == rows and capsys.readouterr().out == ""
    assert len(list((pairs.cache_dir()).glob("pairs-gpt2-train-*.jsonl.gz"))) == 1


def test_dpo_loss_on_regenerated_pairs_is_finite_and_ref_logps_match_the_policy(track):
    policy = load_policy(track)
    rows = load_pairs("train", track, n=8)                            # the same 2 prompts: read from the cache
    batch = collate_pairs(rows, pad_id=load_tokenizer(track).pad_token_id)
    chosen, rejected = pair_logps(policy, batch)                       # (B,), (B,)
    stored_c, stored_r = reference_logps(None, batch)                 # the rows' ref_*_logps, from the sampler
    ref_c, ref_r = reference_logps(frozen_copy(policy), batch)        # a frozen copy of the sampling policy
    # The sampler never samples pad (its logit is -inf), which renormalizes over the rest of the vocabulary:
    # with this untrained 600-token model that moves each token's log-prob by about 1/600, hence the tolerance.
    assert torch.allclose(stored_c, ref_c, atol=0.1) and torch.allclose(stored_r, ref_r, atol=0.1)
    loss, *_ = dpo_loss(chosen, rejected, stored_c, stored_r, beta=0.1)
    assert torch.isfinite(loss)
    loss.backward()
    ln2, *_ = dpo_loss(chosen.detach(), rejected.detach(), ref_c, ref_r, beta=0.1)
    assert abs(ln2.item() - math.log(2)) < 1e-4                        # policy == reference


def test_tiny_track_returns_exactly_the_stored_rows():
    from alignlab.data import read_jsonl, read_pairs
    from alignlab.paths import PAIRS_FILE, PROMPTS_FILE

    tiny = config.select_track("tiny")
    assert load_prompts("test", tiny) == load_prompts("test") == [
        r for r in read_jsonl(PROMPTS_FILE) if r["split"] == "test"]
    stored = [r for r in read_pairs(PAIRS_FILE) if r["split"] == "test"]
    assert load_pairs("test", tiny) == stored
    assert load_pairs("test", None, n=5) == stored[:5]


def test_a_bad_size_or_track_is_refused(track):
    with pytest.raises(ValueError, match="n must be"):
        load_pairs("train", track, n=0)
    with pytest.raises(TypeError, match="select_track"):
        load_prompts("test", track="gpt2")


def test_solution_notebooks_sample_with_a_generator_on_the_tracks_device():
    """torch.multinomial refuses a CPU generator for CUDA probabilities: every sampling call in a notebook
    that runs on the track's device must build its generator there (notebook 07's arithmetic model stays
    on the CPU)."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    offenders = []
    for path in sorted((root / "solutions").glob("*/*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            source = "".join(cell["source"])
            for statement in source.split("\n\n"):
                if "sample(" in statement and "torch.Generator()" in statement and "arithmetic.sample(" not in statement:
                    offenders.append(f"{path.name}: {statement.strip().splitlines()[0]}")
    assert offenders == []


# ------------------------------------------------------------------ benchmarks/gpu_shapes.py's accounting
def _gpu_shapes():
    import importlib.util
    import sys
    from pathlib import Path

    if "gpu_shapes" not in sys.modules:
        path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_shapes.py"
        spec = importlib.util.spec_from_file_location("gpu_shapes", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_shapes"] = module                  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["gpu_shapes"]


def test_gpu_shapes_counts_cpu_attention_and_every_matmul_of_a_gpt2_forward():
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import GPT2Config, GPT2LMHeadModel

    _gpu_shapes()                                       # registers the CPU attention kernel's formula
    B, T, d, V, H = 2, 6, 16, 50, 2
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=8, n_embd=d, n_layer=1, n_head=H)).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(input_ids=torch.randint(0, V, (B, T)))
    linear = 2 * B * T * (3 * d * d + d * d + 8 * d * d + d * V)       # qkv, projection, MLP, LM head
    attention = 2 * 2 * B * H * T * T * (d // H)                        # scores and weighted sum
    assert counter.get_total_flops() == linear + attention


def test_gpu_shapes_scales_a_call_by_tokens_and_extrapolates_its_memory_linearly():
    gs = _gpu_shapes()
    weight = torch.randn(32, 32)

    def run(s):
        x = torch.randn(s * 10, 32)                     # 128 bytes per token, and as much for y
        y = x @ weight                                   # 2 * 32 * 32 FLOPs per token
        del x, y
        return {"main": gs.tok(s * 10)}

    call = gs.Call("toy", "a matmul per token", run, (1, 2), {"main": gs.tok(1000)}, keep=lambda: [weight])
    call.measure()
    assert call.step_flops() == 1000 * 2 * 32 * 32
    transient, where = call.transient_bytes()
    assert where == "main" and transient == pytest.approx(1000 * 2 * 32 * 4, rel=0.05)   # x and y, 1,000 tokens
    assert [r["baseline_bytes"] for r in call.results] == [32 * 32 * 4] * 2


def test_gpu_shapes_counts_distinct_sequences_of_dpo_batches():
    gs = _gpu_shapes()
    assert gs.unique_sequences(range(6)) == 4                            # one prompt: 6 pairs of 4 completions
    assert gs.unique_sequences(range(64)) == 10 * 4 + 4                  # notebook 05's first batch
    assert 44 <= gs.mean_unique_per_batch(12_000, 64, 600, grouped=True) <= 46
    assert 120 <= gs.mean_unique_per_batch(18_000, 64, 50, grouped=False) <= 128
