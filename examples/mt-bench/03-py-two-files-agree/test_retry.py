import unittest

import config
from retry import call_with_retry


class Flaky:
    """Fails `failures` times, then returns "ok"."""

    def __init__(self, failures):
        self.failures = failures
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"failure {self.calls}")
        return "ok"


class RetryTest(unittest.TestCase):
    def test_five_attempts_configured(self):
        self.assertEqual(config.MAX_ATTEMPTS, 5)

    def test_succeeds_on_the_last_attempt(self):
        flaky = Flaky(4)
        self.assertEqual(call_with_retry(flaky), "ok")
        self.assertEqual(flaky.calls, 5)

    def test_gives_up_after_max_attempts(self):
        flaky = Flaky(100)
        with self.assertRaises(ConnectionError):
            call_with_retry(flaky)
        self.assertEqual(flaky.calls, config.MAX_ATTEMPTS)


if __name__ == "__main__":
    unittest.main()
