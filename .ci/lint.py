#!/usr/bin/env python
"""Lint the exported package with ruff (ruff.toml beside the repo root holds the rules).

    python .ci/lint.py            # exit status 0 when clean; otherwise every finding, then 1

The one exception to ruff.toml's rules: nbdev_export writes each module's `__all__` wrapped at 120
columns, so E501 (line too long) is let pass on the lines of that generated statement, and nowhere else.
"""
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def all_lines(path: Path) -> set:
    "The line numbers of the module-level `__all__ = [...]` statement nbdev writes."
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n for node in tree.body if isinstance(node, ast.Assign)
            and any(getattr(t, "id", None) == "__all__" for t in node.targets)
            for n in range(node.lineno, node.end_lineno + 1)}


def findings(root: Path = ROOT) -> list:
    "ruff's findings on root/ddpm_nb (rules from root/ruff.toml), less E501 inside nbdev's `__all__`."
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "json", "ddpm_nb"],
                       cwd=root, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise RuntimeError(f"ruff failed (exit status {r.returncode}): {r.stderr.strip()}")
    kept, exempt = [], {}
    for d in json.loads(r.stdout):
        path = Path(d["filename"])
        if d["code"] == "E501":
            if path not in exempt:
                exempt[path] = all_lines(path)
            if d["location"]["row"] in exempt[path]:
                continue
        kept.append(d)
    return kept


def main() -> int:
    kept = findings()
    for d in kept:
        rel = Path(d["filename"]).relative_to(ROOT)
        print(f"{rel}:{d['location']['row']}:{d['location']['column']}: {d['code']} {d['message']}")
    if kept:
        print(f"{len(kept)} finding(s); the code is generated from nbs/: fix the notebook, then nbdev_export")
    return 1 if kept else 0


if __name__ == "__main__":
    sys.exit(main())
