import math


def circle_area(radius: float) -> float:
    """Area of a circle of the given radius."""
    return 


def main() -> None:
    print(circle_area(2.0))
