"""The similarity report flags copies and leaves honest work alone.

False positives are measured on honest answers: every valid entry of the catalogue (tests/catalogue/valid.py) and
the answers written independently in tests/similarity/, each compared with every other honest answer of its
exercise and with the course's reference and solution. None may be flagged; the measured rate is written to
build/test-artifacts/similarity_false_positives.json.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from adversarial import COPIED_CLASSMATE, CORRECT, HONEST_ALT, HONEST_ORIGINAL
from alignlab.grading import similarity
from alignlab.grading.release import assignments
from catalogue import cell_source
from catalogue.valid import VALID
from similarity import HONEST

ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"


def _assignment_of() -> dict[str, str]:
    return {exercise: a for a in assignments() for exercise in similarity.course_answers(a)}


def honest_answers() -> dict[str, dict[str, dict[str, str]]]:
    """assignment -> author -> exercise -> source, for every honest answer we have."""
    where = _assignment_of()
    out: dict[str, dict[str, dict[str, str]]] = {}

    def add(exercise, author, source):
        out.setdefault(where[exercise], {}).setdefault(author, {})[exercise] = source

    for exercise, items in VALID.items():
        for label, fn in items:
            add(exercise, f"catalogue: {label}", cell_source(fn))
    for exercise, sources in HONEST.items():
        for i, source in enumerate(sources):
            add(exercise, f"independent {i}", source)
    for author, source in (("adversarial CORRECT", CORRECT), ("honest_original", HONEST_ORIGINAL), ("honest_alt", HONEST_ALT)):
        add("log_softmax", author, source)
    return out


def test_no_honest_answer_is_flagged_and_the_rate_is_recorded():
    pairs, flags = 0, []
    for assignment, answers in honest_answers().items():
        course = similarity.course_answers(assignment)
        for exercise in course:
            n = sum(exercise in by for by in answers.values())
            pairs += n * (n - 1) // 2 + n * len(course[exercise])
        flags += similarity.similar_pairs(answers, course, similarity.stubs(assignment))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "similarity_false_positives.json").write_text(json.dumps(
        {"honest_pairs": pairs, "flagged": len(flags), "rate": len(flags) / pairs, "k": similarity.K,
         "threshold": similarity.THRESHOLD, "min_shared": similarity.MIN_SHARED}, indent=1))
    assert pairs >= 150
    assert not flags, [(p.exercise, p.a, p.b, round(p.similarity, 2), p.shared) for p in flags]


def test_a_classmate_s_answer_with_new_names_and_layout_is_flagged_with_its_pair():
    answers = {"ana": {"log_softmax": HONEST_ORIGINAL}, "ben": {"log_softmax": COPIED_CLASSMATE},
               "cy": {"log_softmax": HONEST_ALT}}
    pairs = similarity.similar_pairs(answers, similarity.course_answers("00_getting_started"),
                                     similarity.stubs("00_getting_started"))
    assert [(p.a, p.b) for p in pairs] == [("ana", "ben")]
    assert pairs[0].similarity == 1.0 and "keepdim = True" in pairs[0].b_text


def test_the_course_s_solution_renamed_is_flagged_against_the_course():
    solution = dict(similarity.course_answers("04_rlhf_ppo")["gae_advantages"])[similarity.SOLUTION]
    renamed = solution
    for old, new in (("rewards", "r"), ("values", "v"), ("mask", "msk"), ("advantages", "adv_out"), ("delta", "d")):
        renamed = re.sub(rf"\b{old}\b", new, renamed)
    renamed = renamed.replace("    ", "  ")
    pairs = similarity.similar_pairs({"dan": {"gae_advantages": renamed}}, similarity.course_answers("04_rlhf_ppo"),
                                     similarity.stubs("04_rlhf_ppo"))
    assert [(p.a, p.b) for p in pairs] == [("dan", similarity.SOLUTION)] or \
        [(p.a, p.b) for p in pairs] == [("dan", similarity.REFERENCE)], pairs


@pytest.mark.parametrize("source", [
    "import torch\n\ndef bradley_terry_probability(reward_a, reward_b):\n    return torch.sigmoid(reward_a - reward_b)\n",
    "import torch\nimport torch.nn.functional as F\n\ndef bradley_terry_probability(reward_a, reward_b):\n"
    "    return torch.sigmoid(reward_a.float() - reward_b.float())\n",
])
def test_a_one_line_standard_formula_is_not_a_copy_even_when_everyone_writes_it(source):
    answers = {f"s{i}": {"bradley_terry_probability": source} for i in range(5)}
    assert similarity.similar_pairs(answers, similarity.course_answers("01_preference_data"),
                                    similarity.stubs("01_preference_data")) == []


def test_the_judge_s_record_of_the_reference_s_own_code_makes_a_pair():
    records = {"eve": {"records": [{"check": "log_softmax", "same_code": "alignlab.reference.log_softmax"},
                                   {"check": "log_softmax", "same_code": None}]}}
    pairs = similarity.same_code_pairs(records, {"eve": {"log_softmax": "exec(...)"}})
    assert [(p.exercise, p.a, p.b) for p in pairs] == [("log_softmax", "eve", similarity.REFERENCE)]
    assert "def log_softmax" in pairs[0].b_text and pairs[0].a_text == "exec(...)"
