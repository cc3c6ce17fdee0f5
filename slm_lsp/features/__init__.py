"""LSP features: thin adapters from LSP params to a plain engine call. One module per method."""

from . import commands, completion, documents, inline_completion, lifecycle

FEATURES = [
    lifecycle.register,
    documents.register,
    inline_completion.register,
    completion.register,
    commands.register,
]
