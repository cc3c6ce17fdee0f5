"""slm-lsp: offline fill-in-the-middle code completion from an in-process GGUF model."""

__version__ = "0.1.0"
