"""Shapes to and from JSON."""

import json

from ..ops import from_specs


def dump_shapes(shapes, path):
    specs = []
    for shape in shapes:
        spec = {"kind": shape.kind}
        spec.update(vars(shape))
        specs.append(spec)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(specs, fh, indent=2)


def load_shapes(path):
    with open(path, encoding="utf-8") as fh:
        return from_specs(json.load(fh))
