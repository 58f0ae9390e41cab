"""nbgrader plumbing of the course: release, parallel autograding, feedback without hidden tests, grade export.

Command line: ``python -m alignlab.grading {release,grade,feedback,export} --help``; the instructor guide is
``autograder/README.md``. The nbgrader settings live in :mod:`alignlab.grading.course`.
"""
