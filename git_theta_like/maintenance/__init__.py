"""Keeping a repository's object store healthy: `fsck` (every object each reachable manifest
needs exists and decodes to its raw hash; optionally present on the remote) and `gc` (delete
local objects no root needs). Siblings semdiff, merge and migrate are never imported; may import
filters, lfs, store and everything below."""
