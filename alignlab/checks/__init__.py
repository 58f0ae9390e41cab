"""Checks for every exercise: ``checks.NAME(fn, hidden=False)`` raises AssertionError with advice, or prints a success line."""
from .exercises import *          # noqa: F401,F403  the math exercises (one check per exercise)
from .questions import *          # noqa: F401,F403  multiple-choice questions, checked by hash
from .debugging import *          # noqa: F401,F403  notebook 05's debugging exercise
