"""Squares."""


def area(side):
    return side * side
