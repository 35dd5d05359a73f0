"""Fixtures of the end-to-end tests that share one running system (tests/support/system.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.system import System, running_system


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("e2e-logs")) as system:
        yield system


@pytest.fixture
def sut(system: System) -> Iterator[System]:
    system.alive()
    system.settle()
    yield system
    system.alive()
