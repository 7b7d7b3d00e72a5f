"""Build ``cloudnet-router``, the router appliance's wheel, from the same tree
as the ``cloudnet`` distribution.

    python scripts/router_wheel.py [--src TREE] OUT_DIR      # prints the wheel's path

The appliance runs one program, the router agent: it needs the router agent,
``common/`` and the router's API stubs (``cloudnet.router``), and of the
third-party packages only what those import. pyproject.toml's
``[tool.cloudnet.router-wheel]`` says which packages and which dependencies
(tests/unit/test_packaging.py checks both against the imports); the version,
the Python requirement and the router's console scripts are the main
distribution's. The packages are copied into a scratch project with a
generated pyproject.toml and built there with pip (no build isolation when
setuptools is importable here, so nothing is downloaded).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

NAME = "cloudnet-router"
# Where a package's sources are, by its top-level name (pyproject's
# [tool.setuptools.packages.find] where = [".", "proto"]).
SOURCE_ROOTS = {"cloudnet": "proto"}


def _toml_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _package_dir(src: pathlib.Path, package: str) -> pathlib.Path:
    top = package.split(".", 1)[0]
    return src / SOURCE_ROOTS.get(top, ".") / package.replace(".", "/")


def _stage(src: pathlib.Path, packages: list[str], dest: pathlib.Path) -> None:
    """Copies each package (with its sub-packages and data) and the
    ``__init__.py`` of every parent package to ``dest``, in the tree's layout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in packages:
        source = _package_dir(src, package)
        if not (source / "__init__.py").is_file():
            raise SystemExit(f"router wheel: {package} is not a package ({source})")
        shutil.copytree(source, _package_dir(dest, package), ignore=ignore)
        parts = package.split(".")
        for n in range(1, len(parts)):
            parent = ".".join(parts[:n])
            init = _package_dir(dest, parent) / "__init__.py"
            if not init.exists():
                init.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(_package_dir(src, parent) / "__init__.py", init)


def pyproject(project: Mapping[str, Any], setuptools: Mapping[str, Any],
              wheel: Mapping[str, Any]) -> str:
    """The scratch project's pyproject.toml, from the main one's tables."""
    packages: list[str] = wheel["packages"]
    tops = {p.split(".", 1)[0] for p in packages}

    def ours(package: str) -> bool:
        return any(package == p or package.startswith(p + ".") for p in packages)

    scripts = {name: target for name, target in project["scripts"].items()
               if ours(target.split(":", 1)[0])}
    parents = {".".join(p.split(".")[:n]) for p in packages for n in range(1, p.count(".") + 1)}
    include = sorted(parents | set(packages) | {p + ".*" for p in packages})
    where = sorted({SOURCE_ROOTS.get(top, ".") for top in tops})
    package_data = {k: v for k, v in setuptools.get("package-data", {}).items() if ours(k)}
    lines = [
        "[build-system]",
        'requires = ["setuptools>=77"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f"name = {json.dumps(NAME)}",
        f"version = {json.dumps(project['version'])}",
        'description = "cloudnet\'s router agent: the router appliance\'s part of cloudnet"',
        f"requires-python = {json.dumps(project['requires-python'])}",
        f"license = {json.dumps(project['license'])}",
        f"dependencies = {_toml_list(wheel['dependencies'])}",
        "",
        "[project.scripts]",
        *(f"{json.dumps(name)} = {json.dumps(target)}" for name, target in sorted(scripts.items())),
        "",
        "[tool.setuptools.packages.find]",
        f"where = {_toml_list(where)}",
        f"include = {_toml_list(include)}",
        "namespaces = false",
        "",
        "[tool.setuptools.package-data]",
        *(f"{json.dumps(k)} = {_toml_list(v)}" for k, v in sorted(package_data.items())),
        "",
    ]
    return "\n".join(lines)


def build(src: pathlib.Path, out: pathlib.Path, python: str = sys.executable) -> pathlib.Path:
    """Builds the wheel from the tree ``src`` into ``out``; returns its path."""
    config = tomllib.loads((src / "pyproject.toml").read_text())
    wheel = config["tool"]["cloudnet"]["router-wheel"]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cloudnet-router-wheel.") as scratch:
        stage = pathlib.Path(scratch) / "src"
        stage.mkdir()
        _stage(src, wheel["packages"], stage)
        (stage / "pyproject.toml").write_text(
            pyproject(config["project"], config["tool"]["setuptools"], wheel))
        # Without isolation when setuptools is here: nothing to download.
        flags = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
        built = pathlib.Path(scratch) / "dist"
        # The build's output (setuptools' warnings about the template
        # directories, which are package data) only when it fails.
        run = subprocess.run([python, "-m", "pip", "wheel", "-q", "--no-deps", *flags,
                              "-w", str(built), str(stage)], capture_output=True, text=True)
        if run.returncode:
            sys.stderr.write(run.stdout + run.stderr)
            raise SystemExit(f"router wheel: pip wheel failed ({run.returncode})")
        (made,) = built.glob("cloudnet_router-*.whl")
        target = out / made.name
        shutil.copy2(made, target)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = pathlib.Path(__file__).resolve().parent.parent
    p.add_argument("--src", type=pathlib.Path, default=here,
                   help="the source tree (default: this script's)")
    p.add_argument("out", type=pathlib.Path, help="directory for the wheel")
    args = p.parse_args(argv)
    print(build(args.src.resolve(), args.out.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
