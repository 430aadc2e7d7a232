"""The local object store: git-lfs's layout (`.git/lfs/objects/xx/yy/<oid>`), one atomic
writer, the lock writers share and gc takes alone, and the one verified, cached reader of raw
tensor contents (reader.py: `ObjectReader`, bounded or not, and `CachedStore`, the LocalStore
view of it a merge hands to clean). Downloads reach it through a fetch callback: the store never
imports the LFS client. May import codecs, formats, gitio and the bottom layer."""

from __future__ import annotations

import weakref

from git_theta_like.gitio.repo import CONFIG_SECTION, Repo
from git_theta_like.store.local import LocalStore
from git_theta_like.store.lock import StoreLock

__all__ = ["LocalStore", "StoreLock", "register_repo", "store_of"]

_STORES: weakref.WeakKeyDictionary[Repo, LocalStore] = weakref.WeakKeyDictionary()


def store_of(repo: Repo) -> LocalStore:
    """The repository's object store (`lfs.storage`, else `<common git dir>/lfs`), one per Repo."""
    store = _STORES.get(repo)
    if store is None:
        durable = repo.config_bool(f"{CONFIG_SECTION}.fsync", default=True)
        store = _STORES[repo] = LocalStore(repo.lfs_dir, durable=durable)
    return store


def register_repo(repo: Repo) -> LocalStore:
    """The repository's store, with the repository recorded as one of its users (install and the
    filter do this, so that gc can tell a store shared through `lfs.storage`)."""
    store = store_of(repo)
    store.register_user(repo.common_dir)
    return store
