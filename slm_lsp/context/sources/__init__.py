"""Context sources, one per file: definitions, similar snippets, recent edits."""
