"""Triangles."""


def area(base, height):
    return base * height
