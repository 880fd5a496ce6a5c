import unittest

from paging import page, page_count

ITEMS = list(range(10))


class PageTest(unittest.TestCase):
    def test_first_page(self):
        self.assertEqual(page(ITEMS, 1, 3), [0, 1, 2])

    def test_middle_page(self):
        self.assertEqual(page(ITEMS, 2, 3), [3, 4, 5])

    def test_last_partial_page(self):
        self.assertEqual(page(ITEMS, 4, 3), [9])

    def test_past_the_end(self):
        self.assertEqual(page(ITEMS, 5, 3), [])

    def test_page_zero_is_refused(self):
        with self.assertRaises(ValueError):
            page(ITEMS, 0, 3)

    def test_page_count(self):
        self.assertEqual(page_count(10, 3), 4)
        self.assertEqual(page_count(9, 3), 3)


if __name__ == "__main__":
    unittest.main()
