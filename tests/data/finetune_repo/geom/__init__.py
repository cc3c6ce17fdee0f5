"""geom: a tiny geometry package (a fixture for the finetune tests)."""

from .shapes import Circle, Rectangle, Square
from .registry import REGISTRY, register

__all__ = ["Circle", "Rectangle", "Square", "REGISTRY", "register"]
