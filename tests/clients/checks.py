"""One line per check and a summary, for the client test scripts."""

import sys
import traceback


class Checks:
    """Runs checks, printing `ok   NAME` or `FAIL NAME` and the traceback of each."""

    def __init__(self):
        self.results = []

    def check(self, name, fn):
        try:
            fn()
            self.results.append(True)
            print(f"ok   {name}")
        except Exception:  # noqa: BLE001 - report every failure
            self.results.append(False)
            print(f"FAIL {name}")
            traceback.print_exc()

    def finish(self, what):
        """Prints "WHAT: N passed, M failed" and exits 1 when anything failed."""
        passed = sum(self.results)
        print(f"{what}: {passed} passed, {len(self.results) - passed} failed")
        sys.exit(0 if all(self.results) else 1)
