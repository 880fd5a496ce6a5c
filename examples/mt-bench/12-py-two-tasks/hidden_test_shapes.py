# The benchmark's oracle (bench.yaml `check`); not part of the work packet.
import math
import unittest

import catalog


class HiddenShapesTest(unittest.TestCase):
    def test_catalog_areas(self):
        cases = [
            ("circle", (1.5,), math.pi * 2.25),
            ("square", (7,), 49),
            ("rectangle", (3, 4), 12),
            ("triangle", (5, 2), 5),
            ("triangle", (3, 3), 4.5),
            ("hexagon", (1,), 1.5 * math.sqrt(3)),
            ("hexagon", (10,), 150 * math.sqrt(3)),
        ]
        for name, dims, want in cases:
            self.assertAlmostEqual(catalog.area_of(name, *dims), want, msg=name)

    def test_names(self):
        self.assertEqual(catalog.names(), ["circle", "hexagon", "rectangle", "square", "triangle"])


if __name__ == "__main__":
    unittest.main()
