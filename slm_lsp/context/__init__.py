"""Repo-aware context: a live tree-sitter index of the workspace and the sources that pick what
goes into the prompt. No LSP imports here: ``features/context.py`` adapts it to the server."""
