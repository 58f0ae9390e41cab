"""alignlab: the plumbing of the preference-alignment course (data, models, rollout, training loops, plots, checks).

The math each notebook asks for is the learner's to write; ``alignlab.reference``
holds the course's own versions, which later notebooks import.
"""
from .config import Track, grading_mode, in_colab, select_track

__version__ = "0.1.0"
__all__ = ["Track", "grading_mode", "in_colab", "select_track", "__version__"]
