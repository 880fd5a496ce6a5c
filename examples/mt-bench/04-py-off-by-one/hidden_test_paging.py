# The benchmark's oracle (bench.yaml `check`); not part of the work packet.
import unittest

from paging import page, page_count


class HiddenPagingTest(unittest.TestCase):
    def test_pages_cover_every_item_once(self):
        for total in range(0, 23):
            items = list(range(total))
            for per_page in range(1, 7):
                pages = [page(items, n, per_page) for n in range(1, page_count(total, per_page) + 1)]
                self.assertEqual(sum(pages, []), items, (total, per_page))
                self.assertTrue(all(0 < len(p) <= per_page for p in pages))
                self.assertEqual(page(items, page_count(total, per_page) + 1, per_page), [])

    def test_negative_refused(self):
        with self.assertRaises(ValueError):
            page([1, 2], -1, 1)


if __name__ == "__main__":
    unittest.main()
