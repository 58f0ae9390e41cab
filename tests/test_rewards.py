"""The gold classifier: any text in, P(positive) out; the numpy re-implementation equals scikit-learn."""
import shutil
import time

import numpy as np
import pytest
import torch

from alignlab import paths
from alignlab.data import load_reviews
from alignlab.rewards import GoldReward, load_gold



ODD_TEXTS = ["", "   ", "!!!", "A wonderful, wonderful film. I loved it!", "Dull. Far too long; awful acting.",
             "Ünïcode café — naïve résumé 10/10", "not bad not bad not bad", "the the the the", "x y z",
             "This movie was great great great great great great"]


@pytest.fixture(scope="module")
def gold():
    return load_gold()


def test_numpy_scorer_equals_sklearn_predict_proba():
    sklearn = pytest.importorskip("sklearn")  # noqa: F841
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    reviews = load_reviews("test")
    texts, labels = [r["text"][:400] for r in reviews[:300]], [r["label"] for r in reviews[:300]]
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=3000, sublinear_tf=True)
    clf = LogisticRegression(C=4, max_iter=300).fit(vec.fit_transform(texts), labels)
    ours = GoldReward.from_sklearn(vec, clf)
    probe = ODD_TEXTS + [r["text"][:150] for r in reviews[300:400]]
    expected = clf.predict_proba(vec.transform(probe))[:, 1]
    got = ours(probe).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_saved_and_reloaded_scorer_is_unchanged(tmp_path, gold):
    gold.save(tmp_path / "g")
    again = load_gold(tmp_path / "g")
    np.testing.assert_allclose(again(ODD_TEXTS).numpy(), gold(ODD_TEXTS).numpy(), rtol=1e-6)


def test_any_text_gives_a_probability(gold):
    p = gold(ODD_TEXTS)
    assert p.dtype == torch.float32 and p.shape == (len(ODD_TEXTS),)
    assert torch.isfinite(p).all() and ((p > 0) & (p < 1)).all()
    assert gold("I loved it").shape == (1,)
    assert gold([]).shape == (0,)


def test_empty_text_gets_the_intercept(gold):
    assert gold([""]).item() == pytest.approx(1 / (1 + np.exp(-gold.intercept)), rel=1e-6)


def test_clear_sentiment_is_scored_the_right_way(gold):
    pos, neg = gold(["A wonderful film, beautifully acted. I loved it.", "Awful, boring and a waste of time."])
    assert pos > 0.8 and neg < 0.2


def test_non_strings_are_refused_with_advice(gold):
    with pytest.raises(TypeError, match="Decode"):
        gold([[1, 2, 3]])


def test_heldout_accuracy_at_least_085(gold):
    reviews = load_reviews("test")[:600]
    p = gold([r["text"] for r in reviews]).numpy()
    assert ((p > 0.5) == np.array([r["label"] for r in reviews])).mean() >= 0.85


def test_scores_at_least_2000_short_texts_per_second(gold):
    """CPU time of this process, so a busy shared machine does not decide the result."""
    texts = [" ".join(r["text"].split()[:25]) for r in load_reviews("test")[:2000]]
    best = min(_cpu_seconds(gold, texts) for _ in range(3))
    assert len(texts) / best >= 2000, f"{len(texts) / best:.0f} texts/s"


def _cpu_seconds(fn, x):
    t0 = time.process_time()
    fn(x)
    return time.process_time() - t0


def test_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data"):
        load_gold(tmp_path / "nowhere")


def test_corrupt_folder_says_how_to_fix_it(tmp_path):
    broken = tmp_path / "gold"
    shutil.copytree(paths.GOLD_DIR, broken)
    (broken / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RuntimeError, match="make data"):
        load_gold(broken)
