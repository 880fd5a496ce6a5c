"""Circles."""

import math


def area(radius):
    return math.pi * radius * radius
