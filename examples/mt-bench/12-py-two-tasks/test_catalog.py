import math
import unittest

import catalog


class CatalogTest(unittest.TestCase):
    def test_every_shape_is_listed(self):
        self.assertEqual(catalog.names(), ["circle", "hexagon", "rectangle", "square", "triangle"])

    def test_area_of(self):
        self.assertEqual(catalog.area_of("triangle", 4, 3), 6)
        self.assertAlmostEqual(catalog.area_of("hexagon", 2), 6 * math.sqrt(3))


if __name__ == "__main__":
    unittest.main()
