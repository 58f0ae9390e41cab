"""Multiple choice by hash: the right answer prints its explanation, a wrong one a hint, never the answer."""
import json

import pytest

from alignlab import checks, paths
from alignlab.checks import questions

EXPLANATION = "Because the partition function cancels in the Bradley-Terry difference."
HINT = "Write the preference probability with both implicit rewards."


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "AUTOGRADER_DIR", tmp_path)
    questions.main(["add", "--notebook", "05_dpo", "--id", "seed_implication", "--answer", "B",
                    "--hint", HINT, "--explanation", EXPLANATION])
    return tmp_path / "questions" / "05_dpo.json"


@pytest.mark.parametrize("a,b", [("b", "B"), (" B ", "b"), ("(b)", "B"), ("b.", "B"), ("A, C", "c a"), (["a", "C"], "A,C")])
def test_equivalent_answers_normalize_alike(a, b):
    assert questions.normalize(a) == questions.normalize(b)


def test_different_answers_normalize_differently():
    assert questions.normalize("A") != questions.normalize("B")
    assert questions.normalize("A, B") != questions.normalize("A")


@pytest.mark.parametrize("answer", ["B", "b", " (B) "])
def test_the_right_answer_prints_the_explanation(registry, answer, capsys):
    checks.multiple_choice("seed_implication", answer)
    out = capsys.readouterr()
    assert EXPLANATION in out.out and "correct" in out.out and out.err == ""


@pytest.mark.parametrize("answer", ["A", "C", "B, C", "banana"])
def test_a_wrong_answer_gives_the_hint_not_the_answer(registry, answer):
    with pytest.raises(AssertionError) as info:
        checks.multiple_choice("seed_implication", answer)
    message = str(info.value)
    assert HINT in message and EXPLANATION not in message
    assert "'B'" not in message and "answer is B" not in message


@pytest.mark.parametrize("answer", [None, ..., "", "   "])
def test_no_answer_yet_is_a_failure_that_says_so(registry, answer):
    with pytest.raises(AssertionError, match="not answered yet"):
        checks.multiple_choice("seed_implication", answer)


def test_the_registry_holds_neither_the_answer_nor_the_explanation(registry):
    text = registry.read_text()
    entry = json.loads(text)["questions"]["seed_implication"]
    assert EXPLANATION not in text and "partition" not in text
    assert set(entry) == {"salt", "answer_sha256", "hint", "explanation"}
    assert entry["answer_sha256"] not in (questions.hashlib.sha256(b).hexdigest() for b in (b"b", b"B"))  # salted


def test_ids_are_unique_across_notebooks_unless_replaced(registry, capsys):
    with pytest.raises(ValueError, match="already exists"):
        questions.add_question("06_beyond_dpo", "seed_implication", "A", "h", "e")
    questions.add_question("05_dpo", "seed_implication", "C", "new hint", "new explanation", replace=True)
    checks.multiple_choice("seed_implication", "c")
    assert "new explanation" in capsys.readouterr().out


def test_an_unknown_question_is_a_lookup_error(registry):
    with pytest.raises(LookupError, match="unknown question"):
        checks.multiple_choice("no_such_question", "A")


def test_list_shows_ids_and_hints_but_never_answers(registry, capsys):
    questions.main(["list"])
    out = capsys.readouterr().out
    assert "seed_implication" in out and HINT in out and EXPLANATION not in out


def test_the_cli_check_command_reports_right_and_wrong(registry, capsys):
    assert questions.main(["check", "--id", "seed_implication", "--answer", "b"]) == 0
    assert questions.main(["check", "--id", "seed_implication", "--answer", "a"]) == 1


def test_committed_registries_are_well_formed():
    folder = paths.AUTOGRADER_DIR / "questions"
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        data = json.loads(path.read_text())
        assert data["notebook"] == path.stem
        for qid, entry in data["questions"].items():
            assert set(entry) == {"salt", "answer_sha256", "hint", "explanation"}, (path.name, qid)


@pytest.fixture
def matching_registry(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "AUTOGRADER_DIR", tmp_path)
    for letter, answer in (("a", "RLHF"), ("b", "DPO"), ("c", "RLHF")):
        questions.add_question("06_beyond_dpo", f"pipes/{letter}", answer, f"hint for {letter}", f"why {letter}")
    return tmp_path


def test_a_matching_question_passes_only_as_a_whole_and_names_the_wrong_statements(matching_registry, capsys):
    checks.matching("pipes", {"a": "rlhf", "B": "DPO", "(c)": " RLHF "})
    out = capsys.readouterr().out
    assert "correct, all 3 statements" in out and "why a" in out and "why c" in out
    with pytest.raises(AssertionError) as error:
        checks.matching("pipes", {"a": "RLHF", "b": "RLHF"})
    message = str(error.value)
    assert "2 of 3" in message and "(b)" in message and "hint for b" in message and "(c)" in message
    assert "(a)" not in message and "DPO" not in message.replace("'RLHF'", "")
    with pytest.raises(AssertionError, match="not answered yet"):
        checks.matching("pipes", None)
    with pytest.raises(LookupError):
        checks.matching("no_such_matching", {})


def test_the_judge_requires_every_statement_of_a_matching_question(matching_registry):
    from alignlab.grading.judge import requirements
    assert requirements('checks.matching("pipes", answer_match)') == [
        ("multiple_choice:pipes/a", False), ("multiple_choice:pipes/b", False), ("multiple_choice:pipes/c", False)]
