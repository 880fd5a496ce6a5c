# The benchmark's oracle (bench.yaml `check`); not part of the work packet.
import unittest
from unittest import mock

import config
from retry import call_with_retry


class Counter:
    def __init__(self, failures):
        self.failures, self.calls = failures, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise ValueError(self.calls)
        return self.calls


class HiddenRetryTest(unittest.TestCase):
    def test_config(self):
        self.assertEqual(config.MAX_ATTEMPTS, 5)
        self.assertEqual(config.TIMEOUT_SECONDS, 10)

    def test_reads_the_setting_at_call_time(self):
        for attempts in (1, 2, 7):
            with mock.patch.object(config, "MAX_ATTEMPTS", attempts):
                c = Counter(1000)
                with self.assertRaises(ValueError):
                    call_with_retry(c)
                self.assertEqual(c.calls, attempts)
                self.assertEqual(call_with_retry(Counter(attempts - 1)), attempts)

    def test_first_success_returns_at_once(self):
        c = Counter(0)
        self.assertEqual(call_with_retry(c), 1)
        self.assertEqual(c.calls, 1)


if __name__ == "__main__":
    unittest.main()
