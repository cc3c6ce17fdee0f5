def leftpad(text, width, fill=" "):
    """Vendored copy of a tiny third-party helper."""
    return fill * max(0, width - len(text)) + text
