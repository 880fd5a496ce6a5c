# The benchmark's oracle (bench.yaml `check`); not part of the work packet.
import unittest

from temperature import c_to_f, f_to_c


class HiddenTemperatureTest(unittest.TestCase):
    def test_c_to_f(self):
        for c, f in [(-40, -40), (0, 32), (37, 98.6), (100, 212), (-17.5, 0.5)]:
            self.assertAlmostEqual(c_to_f(c), f)

    def test_f_to_c_untouched(self):
        for f, c in [(-40, -40), (32, 0), (212, 100), (50, 10)]:
            self.assertAlmostEqual(f_to_c(f), c)


if __name__ == "__main__":
    unittest.main()
