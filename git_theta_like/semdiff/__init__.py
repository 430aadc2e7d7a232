"""Semantic diffs of checkpoints, computed from manifests and objects only (no smudge): the data
model (`model`), per-tensor statistics (`stats`), comparing two manifests (`compare`), what a
command compares (`sides`), sharded models as one (`sharded`), `log`, the listings of `show`
and `ls-files` (`listing`), renderers (`render/`: text, JSON, Markdown, plot) and git's diff
driver (`driver`). Siblings merge, maintenance and migrate are never imported."""
