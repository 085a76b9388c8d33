"""Shared settings for the test suite.

Environment variables:
  DDPM_NB_TEST_FLAGS    notebook cell flags to run as well, e.g. "slow" or "slow cuda"
                        (cells flagged with settings.ini's tst_flags are skipped otherwise)
  DDPM_NB_REQUIRE_DOCS  "1": the docs tests fail, instead of skipping, when _docs/ is missing
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def force_flags() -> list[str]:
    return os.environ.get("DDPM_NB_TEST_FLAGS", "").split()
