"""The first cell of every notebook: set up the course when (and only when) it runs in Google Colab.

Colab opens a notebook file alone, so that cell cannot import alignlab: it clones
the repository and installs the learner's runtime part (never JupyterLab,
notebook or nbgrader, and never a torch of its own). ``COLAB_CELL`` is the one
canonical text; ``scripts/stamp_colab_cell.py`` writes it into every solution
notebook and a test proves each notebook carries it unchanged.
"""
COURSE_REPO = "https://github.com/alignlab-course/alignlab.git"

COLAB_CELL = f'''# Setup: does something only in Google Colab (clones the course, installs its runtime
# dependencies, keeps Colab's torch); anywhere else it does nothing.
import sys, subprocess
if "google.colab" in sys.modules:
    COURSE_DIR = "/content/alignlab"
    subprocess.run(["git", "clone", "--depth", "1", "{COURSE_REPO}", COURSE_DIR], check=False)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", COURSE_DIR], check=True)
    sys.path.insert(0, COURSE_DIR)'''
