"""Command line: print the total area of the shapes in a JSON file."""

import argparse

from .io.jsonio import load_shapes
from .ops import largest, total_area


def main(argv=None):
    parser = argparse.ArgumentParser(prog="geom")
    parser.add_argument("path")
    parser.add_argument("--largest", action="store_true")
    args = parser.parse_args(argv)
    shapes = load_shapes(args.path)
    if args.largest:
        print(largest(shapes).describe())
    else:
        print(f"total area: {total_area(shapes):.2f}")
    return 0
