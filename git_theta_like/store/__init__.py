"""The object store: git-lfs's local layout (.git/lfs/objects/xx/yy/<oid>) and LFS transfers."""

from git_theta_like.store.local import LocalStore

__all__ = ["LocalStore"]
