"""The test suite; it mirrors the package (tests/<package>/test_<module>.py)."""

import os

# The repository root, where launch.py is.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
