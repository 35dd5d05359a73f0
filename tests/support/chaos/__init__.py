"""The chaos run's harness, shared by tests/e2e/test_chaos.py (its short form) and bench/chaos.py."""

from tests.support.chaos.harness import Chaos, run
from tests.support.chaos.report import JITTER_ALLOWANCE, Report
from tests.support.chaos.workload import Config

__all__ = ["JITTER_ALLOWANCE", "Chaos", "Config", "Report", "run"]
