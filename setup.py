"""Packaging for ddpm_nb: every field comes from settings.ini (nbdev 2's single source)."""
import re
import shlex
from configparser import ConfigParser
from pathlib import Path

import setuptools

here = Path(__file__).resolve().parent
parser = ConfigParser(delimiters=["="])
parser.read(here / "settings.ini", encoding="utf-8")
cfg = parser["DEFAULT"]

licenses = {"apache2": ("Apache-2.0", "OSI Approved :: Apache Software License")}
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable", "6 - Mature", "7 - Inactive"]
py_versions = "3.10 3.11 3.12 3.13".split()

lic = licenses[cfg["license"]]
status = int(cfg["status"])
if not 1 <= status <= len(statuses): raise ValueError(f"settings.ini: status must be 1..{len(statuses)}, got {status}")
min_python = cfg["min_python"]
requirements = shlex.split(cfg.get("requirements", ""))
dev_requirements = shlex.split(cfg.get("dev_requirements", ""))
mnist_requirements = shlex.split(cfg.get("mnist_requirements", ""))
bench_requirements = shlex.split(cfg.get("bench_requirements", ""))
fid_requirements = shlex.split(cfg.get("fid_requirements", ""))
inception_requirements = shlex.split(cfg.get("inception_requirements", ""))
hub_requirements = shlex.split(cfg.get("hub_requirements", ""))
lib_path = cfg["lib_path"]


def long_description() -> str:
    "README.md for PyPI, where relative links do not resolve: chapters link to their docs pages, images to the repository's files."
    text = (here / "README.md").read_text(encoding="utf-8")
    docs = f"{cfg['doc_host'].rstrip('/')}/{cfg['doc_baseurl'].strip('/')}"
    raw = cfg["git_url"].rstrip("/").replace("https://github.com/", "https://raw.githubusercontent.com/") + f"/{cfg['branch']}"
    text = re.sub(r"\]\(nbs/(?:\d+[a-z]?_)?([\w-]+)\.ipynb\)", lambda m: f"]({docs}/{m.group(1)}.html)", text)   # 07_train.ipynb -> train.html
    return re.sub(r"\]\((nbs/images/[^)\s]+)\)", lambda m: f"]({raw}/{m.group(1)})", text)

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=long_description(),
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    url=cfg["git_url"],
    license=lic[0],
    keywords=cfg["keywords"].split(),
    classifiers=[
        f"Development Status :: {statuses[status - 1]}",
        f"Intended Audience :: {cfg['audience'].title()}",
        f"License :: {lic[1]}",
        f"Natural Language :: {cfg['language'].title()}",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ] + [f"Programming Language :: Python :: {v}" for v in py_versions[py_versions.index(min_python):]],
    packages=setuptools.find_packages(include=[lib_path, f"{lib_path}.*"]),
    include_package_data=True,
    python_requires=f">={min_python}",
    install_requires=requirements,
    extras_require={"dev": dev_requirements, "mnist": mnist_requirements, "bench": bench_requirements, "fid": fid_requirements, "inception": inception_requirements, "hub": hub_requirements},
    zip_safe=False,
    entry_points={
        "console_scripts": cfg.get("console_scripts", "").split(),
        # lets nbdev link names across libraries; nothing at run time reads it
        "nbdev": [f"{lib_path}={lib_path}._modidx:d"],
    },
)
