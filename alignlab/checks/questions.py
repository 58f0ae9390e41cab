"""Multiple-choice questions checked by hash: ``checks.multiple_choice("seed_implication", "B")``; matching
questions, one registered question per statement: ``checks.matching("06_match_pipeline", {"a": "RLHF", ...})``.

The registry (``autograder/questions/<notebook>.json``) holds, per question, a
salt, the salted sha256 of the normalized correct answer, a hint, and the
explanation encrypted with a key derived from the correct answer: neither the
answer nor the explanation can be read from it before answering correctly
(short of trying every choice, which is the point of a multiple choice anyway).

Answers are normalized: " b ", "B", "(b)" and "b." are the same answer; for
several letters, "A, C", "c a" and ["a", "c"] are the same answer.

Notebook authors add questions with the CLI:
    python -m alignlab.checks.questions add --notebook 05_dpo --id seed_implication \
        --answer B --hint "..." --explanation "..."
    python -m alignlab.checks.questions list [--notebook 05_dpo]
    python -m alignlab.checks.questions check --id seed_implication --answer B
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from .. import paths
from . import _wire

__all__ = ["multiple_choice", "matching"]


def questions_dir() -> Path:
    return Path(paths.AUTOGRADER_DIR) / "questions"


def normalize(answer) -> str:
    """A canonical form: lower case, no surrounding spaces or brackets, several choices sorted."""
    if isinstance(answer, (list, tuple, set, frozenset)):
        parts = [normalize(a) for a in answer]
    else:
        parts = [p.strip("()[]{}.'\" ") for p in re.split(r"[\s,;]+", str(answer).strip().casefold())]
    parts = sorted({p for p in parts if p})
    return ",".join(parts)


def _digest(salt: str, question_id: str, normalized: str) -> str:
    return hashlib.sha256(f"answer:{salt}:{question_id}:{normalized}".encode()).hexdigest()


def _keystream(salt: str, normalized: str, n: int) -> bytes:
    key = hashlib.sha256(f"key:{salt}:{normalized}".encode()).digest()
    blocks = (hashlib.sha256(key + i.to_bytes(8, "big")).digest() for i in range((n + 31) // 32))
    return b"".join(blocks)[:n]


def _xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream))


def encrypt(text: str, salt: str, normalized: str) -> str:
    data = text.encode()
    return base64.b64encode(_xor(data, _keystream(salt, normalized, len(data)))).decode()


def decrypt(blob: str, salt: str, normalized: str) -> str:
    data = base64.b64decode(blob)
    return _xor(data, _keystream(salt, normalized, len(data))).decode()


# ------------------------------------------------------------------ the registry
def _registry_path(notebook: str) -> Path:
    return questions_dir() / f"{notebook}.json"


def load_registry() -> dict[str, dict]:
    """Every question, keyed by id, with its notebook."""
    found: dict[str, dict] = {}
    for path in sorted(questions_dir().glob("*.json")):
        for qid, q in json.loads(path.read_text())["questions"].items():
            found[qid] = {**q, "notebook": path.stem}
    return found


def add_question(notebook: str, question_id: str, answer, hint: str, explanation: str, replace: bool = False) -> None:
    """Add (or with replace=True, replace) one question in autograder/questions/<notebook>.json."""
    existing = load_registry()
    if question_id in existing and not (replace and existing[question_id]["notebook"] == notebook):
        raise ValueError(f"question id {question_id!r} already exists (in {existing[question_id]['notebook']}); "
                         "ids are unique across notebooks (use --replace to change it in the same notebook)")
    normalized = normalize(answer)
    if not normalized:
        raise ValueError("the answer is empty")
    salt = os.urandom(16).hex()
    path = _registry_path(notebook)
    registry = json.loads(path.read_text()) if path.exists() else {"notebook": notebook, "questions": {}}
    registry["questions"][question_id] = {
        "salt": salt, "answer_sha256": _digest(salt, question_id, normalized),
        "hint": hint, "explanation": encrypt(explanation, salt, normalized),
    }
    registry["questions"] = dict(sorted(registry["questions"].items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(registry, indent=1, ensure_ascii=False) + "\n")


def is_correct(question_id: str, answer) -> tuple[bool, str]:
    """(correct?, explanation if correct else hint)."""
    registry = load_registry()
    if question_id not in registry:
        raise LookupError(f"unknown question {question_id!r}; known: {', '.join(sorted(registry)) or 'none'}")
    q = registry[question_id]
    normalized = normalize(answer)
    if _digest(q["salt"], question_id, normalized) != q["answer_sha256"]:
        return False, q["hint"]
    return True, decrypt(q["explanation"], q["salt"], normalized)


def verdict(question_id: str, answer, shown: str | None = None) -> tuple[bool, str]:
    """(passed?, the message a learner reads): the explanation when right, a hint (never the answer) when wrong.
    ``shown``: the answer as the learner typed it, for the message (default: ``answer``)."""
    if answer is None or answer is Ellipsis or not normalize(answer):
        return False, (f"{question_id}: not answered yet. In the answer cell above this check, set the variable "
                       "it names to your letter as a string (e.g. \"b\") and delete the raise line.")
    correct, text = is_correct(question_id, answer)
    if not correct:
        return False, f"{question_id}: {(shown if shown is not None else str(answer)).strip()!r} is not the answer. Hint: {text}"
    return True, f"{question_id}: correct. {text}"


def _judged(question_id: str, answer) -> tuple[bool, str]:
    """(passed?, message): the judge's under the grader (which records it), else computed here."""
    if _wire.judge_address() and answer is not None and answer is not Ellipsis and normalize(answer):
        try:
            header, _ = _wire.request({"op": "answer", "question": str(question_id), "answer": normalize(answer),
                                       "shown": str(answer).strip()[:200]})
        except (OSError, ValueError) as error:
            raise AssertionError(f"{question_id}: the grader's judge cannot be reached ({error}); no verdict.") from None
        return bool(header.get("passed")), str(header.get("message", ""))
    return verdict(question_id, answer)


def multiple_choice(question_id: str, answer) -> None:
    """Check an answer: prints the explanation when right; raises AssertionError with a hint (never the answer) when wrong.
    Under the grader the judge gives the verdict (and records it); the answer travels normalized."""
    passed, text = _judged(question_id, answer)
    if not passed:
        raise AssertionError(text)
    print(text)


def matching_parts(question_id: str) -> list[str]:
    """The statements of a matching question: the registry's ids ``<question_id>/<letter>``, in order."""
    prefix = f"{question_id}/"
    return sorted(q for q in load_registry() if q.startswith(prefix))


def matching(question_id: str, answers) -> None:
    """Check a matching question: every lettered statement mapped to one option, e.g. ``{"a": "RLHF", "b": "DPO"}``.

    Each statement is registered as its own question ``<question_id>/<letter>`` (same hash scheme). Graded as a
    whole: prints the explanations when every statement is right; otherwise raises AssertionError naming the
    statements that are wrong or missing, each with its hint (never the answer). Under the grader every statement
    goes to the judge, which records each one; the test cell passes only when all of them passed."""
    parts = matching_parts(question_id)
    if not parts:
        raise LookupError(f"unknown matching question {question_id!r}")
    if not isinstance(answers, dict):
        raise AssertionError(f"{question_id}: not answered yet. In the answer cell above this check, set the variable it "
                             "names to a dict from each statement's letter to your choice, and delete the raise line.")
    given = {normalize(letter): choice for letter, choice in answers.items()}
    wrong, explanations = [], []
    for part in parts:
        letter = part.rsplit("/", 1)[1]
        passed, text = _judged(part, given.get(letter))
        if passed:
            explanations.append(f"({letter}) " + text.split(": correct. ", 1)[-1])
        else:
            reason = text.split("Hint: ", 1)[1] if "Hint: " in text else "not answered."
            wrong.append(f"  ({letter}) {given.get(letter)!r}: {reason}")
    if wrong:
        raise AssertionError(f"{question_id}: {len(wrong)} of {len(parts)} statements are matched wrong or not at all:\n"
                             + "\n".join(wrong))
    print(f"{question_id}: correct, all {len(parts)} statements.\n" + "\n".join(explanations))


# ------------------------------------------------------------------ the command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alignlab.checks.questions", description="Manage the multiple-choice registry.")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add a question")
    add.add_argument("--notebook", required=True, help="e.g. 05_dpo (the registry file's name)")
    add.add_argument("--id", required=True, dest="question_id", help="unique question id, used in checks.multiple_choice")
    add.add_argument("--answer", required=True, help="the correct answer, e.g. B or 'A, C'")
    add.add_argument("--hint", required=True, help="shown after a wrong answer; must not give the answer away")
    add.add_argument("--explanation", required=True, help="shown after the right answer (stored encrypted)")
    add.add_argument("--replace", action="store_true", help="replace an existing question of the same notebook")
    lst = sub.add_parser("list", help="list the questions (ids and hints, never answers)")
    lst.add_argument("--notebook", default=None)
    chk = sub.add_parser("check", help="try an answer, as the notebook would")
    chk.add_argument("--id", required=True, dest="question_id")
    chk.add_argument("--answer", required=True)
    args = parser.parse_args(argv)
    if args.command == "add":
        if normalize(args.answer) and normalize(args.answer) in normalize(args.hint).split(","):
            print("note: check that the hint does not give the answer away", file=sys.stderr)
        add_question(args.notebook, args.question_id, args.answer, args.hint, args.explanation, replace=args.replace)
        print(f"added {args.question_id} to {_registry_path(args.notebook)}")
    elif args.command == "list":
        for qid, q in sorted(load_registry().items(), key=lambda kv: (kv[1]["notebook"], kv[0])):
            if args.notebook in (None, q["notebook"]):
                print(f"{q['notebook']}  {qid}  hint: {q['hint']}")
    else:
        correct, text = is_correct(args.question_id, args.answer)
        print(("correct: " if correct else "wrong; hint: ") + text)
        return 0 if correct else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
