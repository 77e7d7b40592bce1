"""Let ``manage.py test`` run the pytest suite."""

from __future__ import annotations

import sys
from typing import Any


class PytestTestRunner:
    """Run pytest with the labels given to ``manage.py test`` as its paths."""

    def __init__(
        self, verbosity: int = 1, failfast: bool = False, keepdb: bool = False, **kwargs: Any
    ) -> None:
        self.verbosity = verbosity
        self.failfast = failfast
        self.keepdb = keepdb

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        parser.add_argument("--keepdb", action="store_true", help="Keep the test database.")

    def run_tests(self, test_labels: list[str], **kwargs: Any) -> int:
        import pytest

        argv: list[str] = []
        if self.verbosity == 0:
            argv.append("--quiet")
        elif self.verbosity >= 2:
            argv.append("--verbose")
        if self.failfast:
            argv.append("--exitfirst")
        if self.keepdb:
            argv.append("--reuse-db")
        argv.extend(test_labels)
        code = pytest.main(argv)
        sys.stdout.flush()
        return int(code)
