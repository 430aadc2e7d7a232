"""Git access, the bottom layer of the package above manifest/dtypes/errors: the repository
(pygit2, with `git cat-file` where pygit2 cannot reach an object), config, `.gitattributes` and
its wildmatch, hook installation, pkt-line and the filter protocol's framing, the one scanner of
manifests in trees, the index and history, and detection of the git command that started us. It
never builds an object store and imports nothing above the bottom layer."""
