"""Shapes to and from CSV (kind,param=value;param=value)."""

import csv

from ..registry import create


def parse_params(text):
    params = {}
    for item in text.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        params[key.strip()] = float(value)
    return params


def load_csv(path):
    shapes = []
    with open(path, newline="", encoding="utf-8") as fh:
        for kind, params in csv.reader(fh):
            shapes.append(create(kind, **parse_params(params)))
    return shapes


def dump_csv(shapes, path):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        for shape in shapes:
            params = ";".join(f"{k}={v}" for k, v in vars(shape).items())
            writer.writerow([shape.kind, params])
