import unittest

from textutils import collapse_spaces, initials, slugify


class SlugifyTest(unittest.TestCase):
    def test_words(self):
        self.assertEqual(slugify("Hello, World!"), "hello-world")

    def test_runs_and_ends(self):
        self.assertEqual(slugify("  Rust & C++  "), "rust-c")

    def test_digits_kept(self):
        self.assertEqual(slugify("Top 10 Tips"), "top-10-tips")

    def test_empty(self):
        self.assertEqual(slugify(""), "")


class ExistingHelpersTest(unittest.TestCase):
    def test_collapse_spaces(self):
        self.assertEqual(collapse_spaces("  a \t b\n"), "a b")

    def test_initials(self):
        self.assertEqual(initials("ada lovelace"), "AL")


if __name__ == "__main__":
    unittest.main()
