"""Data: the IMDb split, the prompts and pairs files, and collation with a completion mask."""
import pytest
import torch

from alignlab.data import collate, collate_pairs, load_reviews, read_jsonl, read_pairs, write_jsonl, write_pairs
from alignlab.pairs import load_pairs, load_prompts



PAD = 1


def test_reviews_split_is_22500_train_2500_test_disjoint_and_clean():
    train, test = load_reviews("train"), load_reviews("test")
    assert (len(train), len(test)) == (22_500, 2_500)
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert not any("<br" in r["text"].lower() for r in train[:3000] + test)
    assert 0.45 < sum(r["label"] for r in test) / len(test) < 0.55


def test_reviews_split_is_deterministic():
    assert [r["id"] for r in load_reviews("test")[:50]] == [r["id"] for r in load_reviews("test")[:50]]


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="train"):
        load_reviews("validation")


def test_collate_right_padding_puts_completion_after_prompt():
    b = collate([[5, 6], [7]], [[8, 0], [9, 10, 0]], pad_id=PAD)
    assert b["input_ids"].tolist() == [[5, 6, 8, 0], [7, 9, 10, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert b["completion_mask"].tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]
    b = collate([[5, 6, 7]], [[8]], pad_id=PAD) | {}
    assert b["completion_mask"].tolist() == [[0, 0, 0, 1]]


def test_collate_left_padding_pads_before_the_prompt():
    b = collate([[5, 6], [7]], [[8], [9]], pad_id=PAD, side="left")
    assert b["input_ids"].tolist() == [[5, 6, 8], [PAD, 7, 9]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert b["completion_mask"].tolist() == [[0, 0, 1], [0, 0, 1]]
    assert all(v.dtype == torch.long for v in b.values())


def test_collate_right_padding_masks_padding():
    b = collate([[5], [6, 7, 8]], [[9], [10]], pad_id=PAD)
    assert b["input_ids"][0].tolist() == [5, 9, PAD, PAD]
    assert b["attention_mask"][0].tolist() == [1, 1, 0, 0]
    assert b["completion_mask"][0].tolist() == [0, 1, 0, 0]


def test_collate_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="empty batch"):
        collate([], [], pad_id=PAD)
    with pytest.raises(ValueError, match="pad token"):
        collate([[1]], [[2]], pad_id=None)
    with pytest.raises(ValueError, match="prompts but"):
        collate([[1]], [[2], [3]], pad_id=PAD)
    with pytest.raises(ValueError, match="side"):
        collate([[1]], [[2]], pad_id=PAD, side="middle")
    with pytest.raises(ValueError, match="empty"):
        collate([[]], [[]], pad_id=PAD)


def test_collate_pairs_gives_chosen_rejected_and_reference_logps():
    rows = [{"prompt_ids": [5, 6], "chosen_ids": [7, 0], "rejected_ids": [8, 9, 10],
             "ref_chosen_logps": -3.5, "ref_rejected_logps": -7.0},
            {"prompt_ids": [11], "chosen_ids": [12], "rejected_ids": [13, 0],
             "ref_chosen_logps": -1.0, "ref_rejected_logps": -2.0}]
    b = collate_pairs(rows, pad_id=PAD)
    assert b["chosen_input_ids"].tolist() == [[5, 6, 7, 0], [11, 12, PAD, PAD]]
    assert b["rejected_completion_mask"].tolist() == [[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert b["ref_chosen_logps"].tolist() == [-3.5, -1.0]
    assert b["ref_rejected_logps"].dtype == torch.float32
    del rows[0]["ref_chosen_logps"]
    assert "ref_chosen_logps" not in collate_pairs(rows, pad_id=PAD)
    with pytest.raises(ValueError, match="empty batch"):
        collate_pairs([], pad_id=PAD)


def test_pair_files_keep_their_stored_key_names_and_rows_get_a_batch_s(tmp_path):
    """On disk ref_chosen_logp (the committed file's format); in memory ref_chosen_logps, as in a batch and in TRL."""
    rows = [{"prompt_ids": [5], "chosen_ids": [6], "rejected_ids": [7], "ref_chosen_logps": -1.5, "ref_rejected_logps": -2.5}]
    write_pairs(tmp_path / "p.jsonl.gz", rows)
    assert set(read_jsonl(tmp_path / "p.jsonl.gz")[0]) == {"prompt_ids", "chosen_ids", "rejected_ids",
                                                           "ref_chosen_logp", "ref_rejected_logp"}
    assert read_pairs(tmp_path / "p.jsonl.gz") == rows


def test_jsonl_round_trip_plain_and_gzipped(tmp_path):
    rows = [{"a": 1, "b": "é"}, {"a": 2, "b": ""}]
    for name in ("x.jsonl", "x.jsonl.gz"):
        write_jsonl(tmp_path / name, rows)
        assert read_jsonl(tmp_path / name) == rows
    write_jsonl(tmp_path / "y.jsonl.gz", rows)
    assert (tmp_path / "y.jsonl.gz").read_bytes() == (tmp_path / "x.jsonl.gz").read_bytes()


def test_prompts_are_2_to_8_token_prefixes_with_splits():
    from alignlab.models import load_tokenizer
    from alignlab import paths
    tok = load_tokenizer(paths.TINY_POLICY_DIR)
    train, test = load_prompts("train"), load_prompts("test")
    assert len(train) >= 1000 and len(test) >= 256
    for p in train[:200] + test[:200]:
        assert 2 <= len(p["prompt_ids"]) <= 8
        assert tok.decode(p["prompt_ids"]) == p["prompt"]
    heldout = {r["id"] for r in load_reviews("test")}
    assert all(p["review"] in heldout for p in test)


def test_pairs_rows_carry_everything_the_notebooks_need():
    pairs = load_pairs("test")
    assert len(pairs) >= 1000
    keys = {"prompt", "prompt_ids", "chosen", "chosen_ids", "rejected", "rejected_ids", "gold_chosen",
            "gold_rejected", "p_chosen", "ref_chosen_logps", "ref_rejected_logps", "split"}
    for r in pairs[:300]:
        assert keys <= r.keys()
        assert 0 < len(r["chosen_ids"]) <= 24 and 0 < len(r["rejected_ids"]) <= 24
        assert 0.0 <= r["p_chosen"] <= 1.0 and r["ref_chosen_logps"] < 0
    noise = sum(r["gold_chosen"] < r["gold_rejected"] for r in pairs) / len(pairs)
    assert 0.02 < noise < 0.4      # Bradley-Terry labels: noisy, but mostly agree with gold


def test_data_folder_is_small_and_has_no_pickle():
    from alignlab import paths
    files = [f for f in paths.DATA_DIR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 25e6
    assert not [f for f in files if f.suffix in {".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".npy"}]


def test_tiny_track_or_none_gives_the_stored_prompts_and_n_takes_the_first_pairs():
    from alignlab.config import select_track

    tiny = select_track("tiny")
    assert load_prompts("train", tiny) == load_prompts("train")
    pairs = load_pairs("test", tiny, n=7)
    assert len(pairs) == 7 and pairs == load_pairs("test")[:7]
    with pytest.raises(ValueError, match="n must be"):
        load_pairs("test", n=0)


def test_build_script_and_runtime_share_one_pair_builder():
    import importlib.util
    from pathlib import Path

    from alignlab import pairs

    script = Path(__file__).resolve().parent.parent / "scripts" / "build_pairs.py"
    spec = importlib.util.spec_from_file_location("build_pairs_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.make_pairs is pairs.make_pairs and module.make_prompts is pairs.make_prompts
    assert pairs.PAIRS_PER_PROMPT == 6 and pairs.SAMPLES_PER_PROMPT == 4
