"""git-theta-like: version-control machine-learning checkpoints with plain Git.

Each tensor of a tracked checkpoint is stored once, as a content-addressed Git LFS object;
Git itself stores a small text manifest in place of the file. See docs/ for the user guide.
"""

__version__ = "0.1.0"
