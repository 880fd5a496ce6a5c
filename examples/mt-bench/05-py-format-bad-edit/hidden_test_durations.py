# The benchmark's oracle (bench.yaml `check`); not part of the work packet.
import unittest

from durations import format_duration, status_line


class HiddenDurationTest(unittest.TestCase):
    def test_cases(self):
        cases = {0: "0:00", 9: "0:09", 59: "0:59", 60: "1:00", 61: "1:01", 3599: "59:59",
                 3600: "1:00:00", 3601: "1:00:01", 36000: "10:00:00", 86399: "23:59:59", 90061.7: "25:01:01"}
        for seconds, text in cases.items():
            self.assertEqual(format_duration(seconds), text, seconds)

    def test_status_line(self):
        self.assertEqual(status_line("X", 3600, 7322), "X  1:00:00 / 2:02:02")


if __name__ == "__main__":
    unittest.main()
