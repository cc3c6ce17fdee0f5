"""A registry of shape classes by name."""

REGISTRY = {}


def register(name):
    """Class decorator: make a shape available under ``name``."""
    def wrap(cls):
        if name in REGISTRY:
            raise KeyError(f"shape {name!r} is already registered")
        REGISTRY[name] = cls
        cls.kind = name
        return cls
    return wrap


def lookup(name):
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown shape {name!r}; known: {sorted(REGISTRY)}") from None


def create(name, **params):
    cls = lookup(name)
    return cls(**params)
