import math
import unittest

import circle
import hexagon
import rectangle
import square
import triangle


class AreaTest(unittest.TestCase):
    def test_circle(self):
        self.assertAlmostEqual(circle.area(2), 4 * math.pi)

    def test_square(self):
        self.assertEqual(square.area(3), 9)

    def test_rectangle(self):
        self.assertEqual(rectangle.area(2, 5), 10)

    def test_triangle(self):
        self.assertEqual(triangle.area(4, 3), 6)

    def test_hexagon(self):
        # a regular hexagon is six equilateral triangles: 3 * sqrt(3) / 2 * side^2
        self.assertAlmostEqual(hexagon.area(2), 6 * math.sqrt(3))


if __name__ == "__main__":
    unittest.main()
