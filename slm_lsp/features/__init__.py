"""LSP features: thin adapters from LSP params to a plain engine call. One module per method."""

from . import (
    accept,
    code_action,
    commands,
    completion,
    context,
    documents,
    inline_completion,
    lifecycle,
    loop_stall,
    next_edit,
)

FEATURES = [
    lifecycle.register,
    context.register,
    documents.register,
    accept.register,
    inline_completion.register,
    completion.register,
    commands.register,
    code_action.register,
    next_edit.register,
    loop_stall.register,
]
