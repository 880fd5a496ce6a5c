"""Regular hexagons."""

import math


def area(side):
    return 3 * math.sqrt(3) * side * side
