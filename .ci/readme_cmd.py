"""Print the command README.md gives under a marker: setup, test or docs.

README.md marks each command with an HTML comment (`<!-- setup-command -->`) right above its
fenced block, so CI runs exactly what a new user copies.
"""
import re
import sys
from pathlib import Path

name = sys.argv[1]
text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
m = re.search(rf"<!-- {re.escape(name)}-command -->\n```\w*\n(.*?)\n```", text, re.S)
if not m:
    sys.exit(f"README.md has no block marked <!-- {name}-command -->")
print(m.group(1).strip())
