"""Git access: repository, config, .gitattributes, hooks and the filter-process protocol."""
