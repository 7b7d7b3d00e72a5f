"""The distributions as a user gets them, not as the source tree looks.

Each wheel is built from a copy of this tree (``pip wheel --no-deps``, what
the tree holds including files not yet committed, without what .gitignore
leaves out), installed without ``-e`` into a fresh virtualenv, and every
module of it imported from outside the tree (another working directory, no
PYTHONPATH); every console script's ``--help`` runs. Two distributions:
``cloudnet`` (everything) and ``cloudnet-router`` (what the router appliance
installs: scripts/router_wheel.py). About half a minute.

The fresh virtualenvs reach the dependencies through a .pth line naming this
virtualenv's site-packages, so nothing is downloaded. A directory added that
way is not a site directory: its own .pth files (the project's editable
install among them) do not run, so only the wheel's copy of cloudnet can be
imported, and every imported module is checked to come from the new venv.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Top-level packages of the tree that are not part of any distribution.
NOT_DISTRIBUTED = {"tests"}
# Where the generated API stubs live in the tree (import name cloudnet.*).
STUBS = ROOT / "proto" / "cloudnet"
# Files of the tree that no distribution needs at run time.
SOURCES_ONLY = {".proto"}
# Modules that cannot be imported on their own, with the reason.
NOT_IMPORTABLE = {
    # alembic's migration environment: alembic runs it inside a migration
    # (netmgr.store), where alembic.context has a config; imported alone it fails.
    "netmgr.store.migrations.env",
}
DAEMONS = {"cloudnet", "cloudnet-netmgr", "cloudnet-agent", "cloudnet-router-agent",
           "cloudnet-compute", "cloudnet-aio"}
ROUTER_DAEMONS = {"cloudnet-agent", "cloudnet-router-agent"}


# ------------------------------------------------------------------ the tree


def _tree_files() -> list[Path]:
    """The tree's files as git sees them: tracked or new, not ignored."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True).stdout.decode()
    return [ROOT / f for f in out.split("\0") if f and (ROOT / f).is_file()]


def _product_packages() -> dict[str, Path]:
    """Top-level import name -> directory, for every package a wheel should hold."""
    tops = {d.name: d for d in ROOT.iterdir()
            if (d / "__init__.py").is_file() and d.name not in NOT_DISTRIBUTED}
    return tops | {"cloudnet": STUBS}


def _expected_files(tops: Iterable[str], files: list[Path]) -> set[str]:
    """Paths in a wheel (``router/lib/proc.py``) of the tree's files of ``tops``
    (``cloudnet.router``: that sub-package and the ``__init__.py`` above it)."""
    packages = _product_packages()
    out: set[str] = set()
    for top in tops:
        first, _, rest = top.partition(".")
        base = packages[first]
        within = base.joinpath(*rest.split(".")) if rest else base
        for f in files:
            if f.suffix in SOURCES_ONLY or "__pycache__" in f.parts:
                continue
            parent_init = f.name == "__init__.py" and within.is_relative_to(f.parent)
            if f.is_relative_to(within) or (parent_init and f.is_relative_to(base)):
                out.add("/".join((first, *f.relative_to(base).parts)))
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tree: building in place would leave build/ and egg-info behind."""
    dest = tmp_path_factory.mktemp("tree")
    for f in _tree_files():
        target = dest / f.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    return dest


# ------------------------------------------------------------ build, install


def _run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _check(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, f"{run.args}: {run.returncode}\n{run.stdout}\n{run.stderr}"
    return run.stdout


@dataclass(frozen=True)
class Installed:
    """A wheel installed into a virtualenv of its own."""

    wheel: Path
    venv: Path
    cwd: Path  # outside the source tree

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *argv: str | Path) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
        return _run(*argv, cwd=self.cwd, env=env)


def _install(wheel: Path, where: Path) -> Installed:
    venv = where / "venv"
    _check(_run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=where))
    purelib = Path(_check(_run(venv / "bin" / "python", "-c",
                               "import sysconfig; print(sysconfig.get_path('purelib'))",
                               cwd=where)).strip())
    (purelib / "_project_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # Without the caller's PYTHONPATH: a source tree on it (with the
    # cloudnet.egg-info an editable install leaves there) makes pip take the
    # wheel as installed already, and install nothing.
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _check(_run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
                "-q", "--no-deps", "--no-index", wheel, cwd=where, env=clean))
    cwd = where / "elsewhere"
    cwd.mkdir()
    return Installed(wheel, venv, cwd)


@pytest.fixture(scope="module")
def cloudnet(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    where = tmp_path_factory.mktemp("cloudnet")
    _check(_run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                "-w", where / "dist", tree, cwd=where))
    (wheel,) = (where / "dist").glob("cloudnet-*.whl")
    return _install(wheel, where)


@pytest.fixture(scope="module")
def cloudnet_router(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    where = tmp_path_factory.mktemp("cloudnet-router")
    out = _check(_run(sys.executable, tree / "scripts" / "router_wheel.py", "--src", tree,
                      where / "dist", cwd=where))
    wheel = Path(out.strip())
    assert wheel.name.startswith("cloudnet_router-"), wheel
    return _install(wheel, where)


# ----------------------------------------------------------- wheel contents


def _wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return {n for n in z.namelist() if ".dist-info/" not in n}


def _wheel_metadata(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as z:
        (path,) = (n for n in z.namelist() if n.endswith(f".dist-info/{name}"))
        return z.read(path).decode()


def _console_scripts(wheel: Path) -> dict[str, str]:
    text = _wheel_metadata(wheel, "entry_points.txt")
    section, out = "", {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and section == "console_scripts":
            name, target = (s.strip() for s in line.split("=", 1))
            out[name] = target
    return out


def _modules(files: Iterable[str]) -> list[str]:
    out = []
    for f in sorted(files):
        if f.endswith(".py"):
            parts = f.removesuffix(".py").split("/")
            if parts[-1] == "__init__":
                parts.pop()
            out.append(".".join(parts))
    return out


def test_the_wheel_holds_every_package_module_stub_and_data_file(cloudnet: Installed) -> None:
    expected = _expected_files(_product_packages(), _tree_files())
    got = _wheel_files(cloudnet.wheel)
    assert expected - got == set(), "in the tree, not in the wheel"
    assert got - expected == set(), "in the wheel, not in the tree"
    # the generated stubs of every service, typed stubs too
    for room in ("netmgr", "router", "compute"):
        assert any(f.startswith(f"cloudnet/{room}/v1/") and f.endswith("_pb2_grpc.pyi")
                   for f in got), room


def test_the_router_wheel_holds_the_router_common_and_router_stubs_only(
        cloudnet_router: Installed) -> None:
    packages = PYPROJECT["tool"]["cloudnet"]["router-wheel"]["packages"]
    assert set(packages) == {"router", "common", "cloudnet.router"}
    expected = _expected_files(packages, _tree_files())
    assert _wheel_files(cloudnet_router.wheel) == expected
    assert {f.split("/")[0] for f in expected} == {"router", "common", "cloudnet"}
    assert "cloudnet/__init__.py" in expected
    assert not any(f.startswith(("cloudnet/netmgr", "cloudnet/compute")) for f in expected)


# ------------------------------------------------------- installed, imported

_IMPORT_ALL = """
import importlib, json, sys
venv, modules = sys.argv[1], json.loads(sys.argv[2])
bad = {}
for name in modules:
    try:
        module = importlib.import_module(name)
    except Exception as e:
        bad[name] = f"{type(e).__name__}: {e}"
        continue
    if not (getattr(module, "__file__", None) or "").startswith(venv):
        bad[name] = f"imported from {module.__file__}, not from the wheel"
print(json.dumps(bad))
"""


def _import_all(installed: Installed, modules: list[str]) -> dict[str, str]:
    out = _check(installed.run(installed.python, "-c", _IMPORT_ALL, str(installed.venv),
                               json.dumps(modules)))
    result: dict[str, str] = json.loads(out)
    return result


def test_every_module_of_the_wheel_imports_from_the_install(cloudnet: Installed) -> None:
    modules = [m for m in _modules(_wheel_files(cloudnet.wheel)) if m not in NOT_IMPORTABLE]
    assert {"cloudnet.compute.v1.compute_pb2_grpc", "netmgr.cli.vm",
            "compute.agent.server", "router.agent.server"} <= set(modules)
    assert _import_all(cloudnet, modules) == {}


def test_the_router_wheel_imports_without_the_rest_of_cloudnet(
        cloudnet_router: Installed) -> None:
    modules = _modules(_wheel_files(cloudnet_router.wheel))
    assert _import_all(cloudnet_router, modules) == {}
    absent = _check(cloudnet_router.run(
        cloudnet_router.python, "-c",
        "import importlib.util as u; print([m for m in ('netmgr', 'compute', 'aio', "
        "'cloudnet.netmgr', 'cloudnet.compute') if u.find_spec(m)])"))
    assert absent.strip() == "[]"


def _help_of_every_script(installed: Installed) -> dict[str, str]:
    bad = {}
    for name in _console_scripts(installed.wheel):
        run = installed.run(installed.venv / "bin" / name, "--help")
        if run.returncode != 0 or "usage:" not in run.stdout:
            bad[name] = f"exit {run.returncode}: {run.stdout[-500:]}{run.stderr[-2000:]}"
    return bad


def test_every_daemon_has_a_console_script_whose_help_works(cloudnet: Installed) -> None:
    scripts = _console_scripts(cloudnet.wheel)
    assert set(scripts) >= DAEMONS
    assert scripts["cloudnet-agent"] == scripts["cloudnet-router-agent"]
    assert _help_of_every_script(cloudnet) == {}


def test_the_router_wheel_has_the_agents_console_scripts(cloudnet_router: Installed) -> None:
    assert set(_console_scripts(cloudnet_router.wheel)) == ROUTER_DAEMONS
    assert _help_of_every_script(cloudnet_router) == {}
    unit = ROOT / "images/router/rootfs/etc/systemd/system/cloudnet-router-agent.service"
    assert "/opt/cloudnet/bin/cloudnet-router-agent " in unit.read_text()


# ---------------------------------------------------------------- dependencies


def _third_party_imports(tops: Iterable[str]) -> dict[str, str]:
    """Third-party module -> a file importing it, for the code under ``tops``
    (a namespace package's module is named with its second part: google.rpc)."""
    ours = set(_product_packages())
    found: dict[str, str] = {}
    for top in tops:
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    first = name.split(".")[0]
                    if first in sys.stdlib_module_names or first in ours:
                        continue
                    spec = importlib.util.find_spec(first)
                    if spec is not None and spec.origin in (None, "namespace"):
                        first = ".".join(name.split(".")[:2])
                    found.setdefault(first, str(path.relative_to(ROOT)))
    return found


def _owner_of_modules() -> dict[str, str]:
    """Top-level module (or namespace.module) -> the distribution installing it."""
    owners: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        for f in dist.files or ():
            parts = f.parts
            if not parts or parts[0].endswith((".dist-info", ".data")) or parts[0] == "..":
                continue
            name = canonicalize_name(dist.metadata["Name"])
            first = parts[0].removesuffix(".py")
            owners.setdefault(first, name)
            top = Path(str(dist.locate_file(parts[0])))
            if len(parts) > 2 and not (top / "__init__.py").exists():
                owners.setdefault(f"{first}.{parts[1].removesuffix('.py')}", name)
    return owners


def _names(requirements: Iterable[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _needed(imports: dict[str, str]) -> dict[str, str]:
    owners = _owner_of_modules()
    missing = sorted(m for m in imports if m not in owners)
    assert not missing, f"not installed here, so not checked: {missing}"
    return {owners[m]: f"{m} ({where})" for m, where in imports.items()}


def test_the_router_wheel_declares_exactly_what_the_router_imports() -> None:
    declared = PYPROJECT["tool"]["cloudnet"]["router-wheel"]["dependencies"]
    needed = _needed(_third_party_imports(("router", "common")))
    assert set(needed) - _names(declared) == set(), needed
    # nothing more: the appliance gets no netmgr-only package (SQLAlchemy...)
    assert _names(declared) - set(needed) == set()
    # the same specifiers as the main distribution's
    assert set(declared) <= set(PYPROJECT["project"]["dependencies"])


def test_every_third_party_import_is_a_declared_dependency() -> None:
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    declared = _names(project["dependencies"]) | _names(
        r for extra, reqs in extras.items() if extra != "dev" for r in reqs)
    needed = _needed(_third_party_imports(_product_packages().keys() - {"cloudnet"}))
    assert set(needed) - declared == set(), needed


def test_the_stubs_runtime_checks_are_the_lower_bounds() -> None:
    """The generated code refuses an older protobuf or grpcio than it was
    generated with: that version is the dependency's lower bound."""
    def generated(marker: str, pattern: str) -> set[str]:
        out = set()
        for path in STUBS.rglob(pattern):
            for line in path.read_text().splitlines():
                if line.startswith(marker):
                    out.add(line.removeprefix(marker).strip().strip("'\""))
        return out

    protobuf = generated("# Protobuf Python Version:", "*_pb2.py")
    grpc = generated("GRPC_GENERATED_VERSION =", "*_pb2_grpc.py")
    assert len(protobuf) == 1, protobuf
    assert len(grpc) == 1, grpc
    bounds = {str(canonicalize_name(r.name)): r.specifier for r in
              map(Requirement, PYPROJECT["project"]["dependencies"])}
    for dist, version in (("protobuf", protobuf.pop()), ("grpcio", grpc.pop())):
        lower = {s.version for s in bounds[dist] if s.operator == ">="}
        assert lower == {version}, (dist, bounds[dist], version)
