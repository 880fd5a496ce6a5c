import unittest

from durations import format_duration, status_line


class FormatDurationTest(unittest.TestCase):
    def test_seconds_are_padded(self):
        self.assertEqual(format_duration(65), "1:05")

    def test_whole_minutes(self):
        self.assertEqual(format_duration(600), "10:00")

    def test_hours(self):
        self.assertEqual(format_duration(3725), "1:02:05")

    def test_zero(self):
        self.assertEqual(format_duration(0), "0:00")

    def test_status_line(self):
        self.assertEqual(status_line("Song", 5, 200), "Song  0:05 / 3:20")


if __name__ == "__main__":
    unittest.main()
