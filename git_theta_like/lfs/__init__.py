"""The Git LFS client, split as git-lfs splits it: `endpoint` (finding the server: lfs.url,
remotes, SSH git-lfs-authenticate, .lfsconfig), `http` (requests, retries, credentials through
`git credential`), `transfer` (the batch API and the concurrent, verified transfer queue),
`pointer` (git-lfs pointer files, spec v1) and `sync` (which objects a push or a
checkout needs). May import store, formats, codecs, gitio and the bottom layer."""
