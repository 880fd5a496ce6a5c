# The benchmark's oracle (bench.yaml `check`); not part of the work packet.
import unittest

from textutils import collapse_spaces, initials, slugify


class HiddenSlugifyTest(unittest.TestCase):
    def test_cases(self):
        cases = {
            "Hello, World!": "hello-world",
            "already-a-slug": "already-a-slug",
            "--Leading and trailing--": "leading-and-trailing",
            "MiXeD CaSe 42": "mixed-case-42",
            "a__b..c": "a-b-c",
            "!!!": "",
            "under_score": "under-score",
        }
        for text, slug in cases.items():
            self.assertEqual(slugify(text), slug, text)

    def test_others_untouched(self):
        self.assertEqual(collapse_spaces(" x  y "), "x y")
        self.assertEqual(initials("grace brewster hopper"), "GBH")


if __name__ == "__main__":
    unittest.main()
