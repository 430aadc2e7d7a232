"""Model merging for `git merge`: the merge driver, strategies (torch, device-aware), mergetool.

`merge_tensors(base, ours, theirs, strategy, **params)` merges one tensor in-process, exactly as
the driver does. Nothing here imports torch until a tensor is computed.
"""

from git_theta_like.errors import MergeConfigError
from git_theta_like.merge.compute import merge_tensors
from git_theta_like.merge.strategies import STRATEGIES, make_strategy
from git_theta_like.merge.strategies.base import Strategy

__all__ = ["STRATEGIES", "MergeConfigError", "Strategy", "make_strategy", "merge_tensors"]
