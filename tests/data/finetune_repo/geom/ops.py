"""Operations on lists of shapes."""

from .registry import create


def total_area(shapes):
    return sum(shape.area() for shape in shapes)


def largest(shapes):
    if not shapes:
        raise ValueError("no shapes")
    return max(shapes, key=lambda shape: shape.area())


def scale_all(shapes, factor):
    return [shape.scale(factor) for shape in shapes]


def from_specs(specs):
    """Shapes from dicts like ``{"kind": "circle", "radius": 2}``."""
    shapes = []
    for spec in specs:
        params = dict(spec)
        kind = params.pop("kind")
        shapes.append(create(kind, **params))
    return shapes
