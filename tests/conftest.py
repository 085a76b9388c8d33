"""Shared settings for the test suite.

Environment variables:
  DDPM_NB_TEST_FLAGS    notebook cell flags to run as well, e.g. "slow" or "slow cuda"
                        (cells flagged with settings.ini's tst_flags are skipped otherwise);
                        "slow" also runs the tests marked slow (each notebook as JupyterLab's Run All runs it);
                        "hub" is never honoured: the hub cells fetch from the network, which no test may do
  DDPM_NB_FULL          "1": the notebooks' FULL switch is on, their full-size runs are repeated
  DDPM_NB_REQUIRE_DOCS  "1": the docs tests fail, instead of skipping, when _docs/ is missing
"""
import os
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def force_flags() -> list[str]:
    return [f for f in os.environ.get("DDPM_NB_TEST_FLAGS", "").split() if f != "hub"]


def terminal_signals():
    "preexec_fn of a child process: SIGINT handled as a terminal's Ctrl-C finds it (a shell that backgrounds jobs makes them ignore it)."
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def docs_problem() -> str | None:
    "Why the built site in _docs/ cannot be tested as it is: missing, or older than its sources; None if fine."
    index = ROOT / "_docs" / "index.html"
    if not index.exists():
        return "docs site not built (_docs/index.html missing): run `python docs/build.py`"
    sources = [*(ROOT / "nbs").glob("*.ipynb"), *(ROOT / "ddpm_nb").glob("*.py"), *(ROOT / "docs").glob("*.py")]
    newer = sorted(p.relative_to(ROOT).as_posix() for p in sources if p.stat().st_mtime > index.stat().st_mtime)
    if newer:
        return f"docs site is older than {', '.join(newer[:3])}{' ...' if len(newer) > 3 else ''}: run `python docs/build.py`"
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long test, run only when DDPM_NB_TEST_FLAGS lists slow (as the notebooks' slow cells)")


def pytest_collection_modifyitems(config, items):
    if "slow" in force_flags(): return
    skip = pytest.mark.skip(reason="slow: run with DDPM_NB_TEST_FLAGS=slow")
    for item in items:
        if "slow" in item.keywords: item.add_marker(skip)
