"""Types the context package hands to others (the engine's prompt builder, finetune): they live
here, in the lower package, so imports keep going one way (context never imports the engine)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ContextFile:
    """A piece of another file placed before the current one (repo-aware context)."""

    path: str
    text: str
    priority: float = 0.0
    """When the context budget is short, pieces with a higher priority are kept first."""
    share: float = 0.0
    """Pieces with a share are kept before all others (by priority) as long as together they take
    at most this fraction of the budget: a source that must not be crowded out by another."""
    private: bool = False
    """The piece comes from a file that looks like a secret, that git ignores or that
    ``remote.deny_files`` names, or its text looks like a secret (``context/privacy.py``): it
    never goes into a prompt sent to a remote model. Local prompts still use it."""
