"""The project's own tooling: the lint of the exported package, the GitHub workflows and the pre-commit
configuration. Everything here runs offline (the workflow schema ships inside check-jsonschema)."""
import importlib.util
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yaml"))


def lint_module():
    spec = importlib.util.spec_from_file_location("ci_lint", ROOT / ".ci" / "lint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def validate_workflow(path):
    "check-jsonschema against GitHub's workflow schema: (exit status, its output)."
    r = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                        "vendor.github-workflows", str(path)], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def readme_command(which):
    return subprocess.run([sys.executable, ".ci/readme_cmd.py", which], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_lint_passes_on_the_package():
    "ruff (ruff.toml's rules: pyflakes, one statement a line, 110 columns) finds nothing in ddpm_nb/."
    r = subprocess.run([sys.executable, ".ci/lint.py"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_lint_finds_what_it_is_for(tmp_path):
    "The lint flags each kind of problem it exists for, and lets pass only long lines of nbdev's `__all__`."
    shutil.copy(ROOT / "ruff.toml", tmp_path / "ruff.toml")
    (tmp_path / "ddpm_nb").mkdir()
    names = [f"name_{i:03d}" for i in range(12)]
    quoted = ", ".join(map(repr, names))
    lines = ["import os",
             f"__all__ = [{quoted},",
             "           'f']",
             *[f"{n} = {i}" for i, n in enumerate(names)],
             "def f(x):",
             "    if x: return undefined_name",
             "    a = 1; b = 2",
             "    return a + b + " + "1" * 100]
    (tmp_path / "ddpm_nb" / "bad.py").write_text("\n".join(lines) + "\n")
    assert len(lines[1]) > 110
    row = {key: i + 1 for i, line in enumerate(lines) for key in ("import", "if x", "a = 1", "return a")
           if line.lstrip().startswith(key)}
    found = sorted((d["code"], d["location"]["row"]) for d in lint_module().findings(tmp_path))
    assert found == sorted([("F401", row["import"]), ("E701", row["if x"]), ("F821", row["if x"]),
                            ("E702", row["a = 1"]), ("E501", row["return a"])]), found


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_validates(workflow):
    "Each workflow file is valid against GitHub's workflow schema (vendored in check-jsonschema)."
    rc, out = validate_workflow(workflow)
    assert rc == 0, out


def test_workflow_schema_catches_a_broken_file(tmp_path):
    "The validation can fail: a job without runs-on and a step that is a number are refused."
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\non: push\njobs:\n  a:\n    steps:\n      - 3\n")
    rc, out = validate_workflow(bad)
    assert rc != 0, out


def test_workflows_run_the_projects_commands():
    "CI on GitHub runs .ci/run itself; the docs workflow installs and builds with README's own commands."
    names = {p.name for p in WORKFLOWS}
    assert {"test.yaml", "docs.yaml"} <= names, names
    runs = {p.name: [s.get("run", "") for job in yaml.safe_load(p.read_text())["jobs"].values()
                     for s in job.get("steps", [])] for p in WORKFLOWS}
    assert "bash .ci/run" in runs["test.yaml"], runs["test.yaml"]
    assert readme_command("setup") in runs["docs.yaml"], runs["docs.yaml"]
    assert readme_command("docs") in runs["docs.yaml"], runs["docs.yaml"]
    docs = yaml.safe_load((ROOT / ".github" / "workflows" / "docs.yaml").read_text())
    uses = [s.get("uses", "") for job in docs["jobs"].values() for s in job.get("steps", [])]
    assert any(u.startswith("actions/upload-pages-artifact") for u in uses), uses
    assert any(u.startswith("actions/deploy-pages") for u in uses), uses


def test_ci_run_lints():
    ".ci/run runs the same lint as the tests and the pre-commit hook."
    assert "python .ci/lint.py" in (ROOT / ".ci" / "run").read_text()


def test_precommit_config():
    "pre-commit accepts the configuration, and it holds nbdev's clean and export hooks and the lint."
    cfg = ROOT / ".pre-commit-config.yaml"
    r = subprocess.run([sys.executable, "-m", "pre_commit", "validate-config", str(cfg)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    repos = yaml.safe_load(cfg.read_text())["repos"]
    hooks = {h["id"]: (repo["repo"], h) for repo in repos for h in repo["hooks"]}
    assert hooks["nbdev_clean"][0] == "https://github.com/fastai/nbdev", hooks
    assert "nbdev_export" in hooks, hooks
    assert hooks["lint"][1]["entry"] == "python .ci/lint.py", hooks
