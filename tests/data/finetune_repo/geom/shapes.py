"""Shapes with an area, a perimeter and a scale method."""

import math

from .registry import register


class Shape:
    kind = "shape"

    def area(self):
        raise NotImplementedError

    def perimeter(self):
        raise NotImplementedError

    def describe(self):
        return f"{self.kind} with area {self.area():.2f} and perimeter {self.perimeter():.2f}"


@register("circle")
class Circle(Shape):
    def __init__(self, radius):
        if radius < 0:
            raise ValueError("radius must not be negative")
        self.radius = radius

    def area(self):
        return math.pi * self.radius ** 2

    def perimeter(self):
        return 2 * math.pi * self.radius

    def scale(self, factor):
        return Circle(self.radius * factor)


@register("rectangle")
class Rectangle(Shape):
    def __init__(self, width, height):
        if width < 0 or height < 0:
            raise ValueError("width and height must not be negative")
        self.width = width
        self.height = height

    def area(self):
        return self.width * self.height

    def perimeter(self):
        return 2 * (self.width + self.height)

    def scale(self, factor):
        return Rectangle(self.width * factor, self.height * factor)


@register("square")
class Square(Rectangle):
    def __init__(self, side):
        super().__init__(side, side)

    def scale(self, factor):
        return Square(self.width * factor)
