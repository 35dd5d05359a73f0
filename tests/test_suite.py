"""The suite's own rule: nothing skips (tests/conftest.py)."""

from __future__ import annotations

import pytest


def test_a_skipping_test_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa: F401")
    pytester.makepyfile(
        """
        import pytest

        def test_skips():
            pytest.skip("no server here")

        @pytest.mark.skip(reason="not today")
        def test_marked():
            pass

        def test_passes():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, errors=1)  # a skip mark acts in setup: an error
    result.stdout.fnmatch_lines(["*allows no skips*no server here*"])
