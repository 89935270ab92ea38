"""The installable distribution (issue 24 items 1, 2, 4): the wheel built by the standard front end,
installed into a fresh venv outside the checkout, works from an empty directory; `r1deploy init`
scaffolds an operator's repository that checks, plans and renders exactly as the checkout's
example does; the spec reference in docs/ is what the spec generates.

No network: the fresh venv gets the wheel with --no-index --no-deps, and its dependencies
(pyinfra, pydantic, ...) from the checkout venv's site-packages through a .pth line (a plain path:
the checkout's editable-install hook there is not run, so only the wheel's r1deploy is importable)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from r1deploy.commands.init import init
from r1deploy.specdoc import markdown

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"roles": "r1deploy/roles", "deploy": "r1deploy/deploys", "templates": "r1deploy/templates"}
RENDER_HOSTS = ["gpu-h200-11", "gpu-h100-01"]  # a serving group's member and a single node


def _run(argv: list, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kw)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT], cwd=ROOT)
    return out


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh venv outside the checkout with only the wheel installed."""
    v = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", "--without-pip", v], cwd=v.parent)
    purelib = Path(_run([v / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=v.parent).stdout.strip())
    (purelib / "checkout_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(dist.glob("*.whl"))
    _run([v / "bin/python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
          "--disable-pip-version-check", wheel], cwd=v.parent)
    return v


def test_issue24_item1_the_wheel_holds_every_role_deploy_and_template_in_one_namespace(dist):
    """issue 24 item 1: every file of roles/, deploy/ and templates/ is in the wheel under r1deploy/,
    and nothing but r1deploy (and its metadata) is top-level; the sdist carries the folders as they are."""
    with zipfile.ZipFile(next(dist.glob("*.whl"))) as whl:
        names = set(whl.namelist())
    wanted = {f"{MAPPED[d]}/{p.relative_to(ROOT / d)}" for d in MAPPED for p in (ROOT / d).rglob("*")
              if p.is_file() and p.suffix in (".py", ".j2")}
    assert wanted <= names, sorted(wanted - names)
    assert {n.split("/")[0] for n in names} == {"r1deploy", f"{next(dist.glob('*.whl')).name.split('-py3')[0]}.dist-info"}
    with tarfile.open(next(dist.glob("*.tar.gz"))) as tar:
        sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"setup.py", "roles/serve/__init__.py", "deploy/main.py", "templates/vllm.yaml.j2",
            "inventories/prod.py"} <= sdist


def test_issue24_item1_installed_package_works_from_an_empty_directory(venv, tmp_path):
    """issue 24 items 1-2: --version, and from an empty directory `r1deploy init`, then check, plan
    and render on the scaffold; render and plan identical to the checkout's for the same inventory."""
    v = venv / "bin"
    assert _run([v / "r1deploy", "--version"], cwd=tmp_path).stdout.strip().startswith("r1deploy ")
    where = _run([v / "python", "-c", "import r1deploy.roles.serve as s, r1deploy.deploys as d, r1deploy.paths as p;"
                  "print(s.__file__, d.__file__, p.TEMPLATES, p.EXAMPLES, callable(d.converge))"], cwd=tmp_path).stdout
    assert str(ROOT) not in where and where.count(str(venv)) == 4 and where.strip().endswith("True"), where
    _run([v / "r1deploy", "init", "fleet"], cwd=tmp_path)
    op = tmp_path / "fleet"
    assert "9 host(s) valid" in _run([v / "r1deploy", "check", "--no-secrets", "inventory.py"], cwd=op).stdout
    plan = _run([v / "r1deploy", "plan", "--inventory", "inventory.py"], cwd=op).stdout
    assert plan == _run([sys.executable, "-m", "r1deploy", "plan", "--inventory", "inventories/prod.py"], cwd=ROOT).stdout
    for host in RENDER_HOSTS:
        _run([v / "r1deploy", "render", "--inventory", "inventory.py", "--host", host, "--out", op / host], cwd=op)
        _run([sys.executable, "-m", "r1deploy", "render", "--inventory", "inventories/prod.py", "--host", host,
              "--out", tmp_path / "checkout" / host], cwd=ROOT)
        mine = {p.name: p.read_text() for p in (op / host).iterdir()}
        assert mine and mine == {p.name: p.read_text() for p in (tmp_path / "checkout" / host).iterdir()}
    # The scaffold's deploy.py runs the installed converge: every role imports, then the whole
    # inventory is validated before any operation (bad data here, so nothing runs on this machine).
    bad = ["--data", "model_repo_id=deepseek-ai/DeepSeek-R1", "--data", "model_revision=main", "--data", "vllm_port=99999"]
    ran = subprocess.run([v / "python", "-m", "pyinfra", "-y", "@local", "deploy.py", *bad], cwd=op, capture_output=True,
                         text=True, timeout=120, env={k: x for k, x in os.environ.items() if k != "PYTHONPATH"})
    out = ran.stdout + ran.stderr
    assert f"{venv}/lib" in out and "r1deploy/deploys/_converge.py" in out, out[-2000:]
    assert "host '@local': vllm_port: Input should be less than or equal to 65535" in out, out[-2000:]


def test_issue24_item1_a_checkout_on_pythonpath_alone_has_the_namespace(tmp_path):
    """issue 24 item 1: the drift timer runs the checkout by PYTHONPATH (no install): r1deploy.roles and
    r1deploy.deploys still resolve to roles/ and deploy/ (r1deploy/__init__.py), not only through the
    editable install's hook, which this run removes."""
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'ditable' not in repr(f)]\n"
            "import r1deploy.roles.serve.release as r, r1deploy.deploys as d; print(r.__file__, d.__file__)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(ROOT / "roles/serve/release.py"), str(ROOT / "deploy/__init__.py")]


def test_issue24_item2_init_scaffolds_an_operator_repo(tmp_path):
    """issue 24 item 2: inventory with the example fleet's groups, their group data, every spec key
    listed commented (the required ones first), deploy files importing r1deploy.deploys, .gitignore."""
    init(str(tmp_path / "op"))
    op = tmp_path / "op"
    groups = {p.stem for p in (op / "group_data").glob("*.py")}
    assert {"all", "inventory", "h200_nodes", "h100_nodes", "h200_r1_group", "gateways"} <= groups
    all_py = (op / "group_data/all.py").read_text()
    assert "# model_repo_id = ...  # str" in all_py and "# vllm_port = 8000" in all_py
    assert "from r1deploy.deploys import converge\n\nconverge()" in (op / "deploy.py").read_text()
    assert "*.key" in (op / ".gitignore").read_text() and "r1deploy check inventory.py" in (op / "README.md").read_text()
    assert "lab" not in (op / "inventory.py").read_text().replace("label", "")


def test_issue24_item2_init_refuses_to_overwrite_and_loses_nothing(tmp_path):
    """issue 24 item 2: one existing file: init names it, writes nothing, the file keeps its text."""
    (tmp_path / "deploy.py").write_text("mine\n")
    with pytest.raises(FileExistsError, match="deploy.py"):
        init(str(tmp_path))
    assert (tmp_path / "deploy.py").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy.py"]


def test_issue24_item4_spec_reference_is_not_stale():
    """issue 24 item 4: docs/spec.md is what `r1deploy docs` generates from the spec today."""
    assert (ROOT / "docs/spec.md").read_text() == markdown(), "docs/spec.md is stale: run `r1deploy docs`"


def test_issue24_item3_examples_an_operator_copies_import_no_lab():
    """issue 24 item 3: nothing under inventories/ (the examples `r1deploy init` copies) imports the
    lab; the lab's inventories live with it (lab/inventories/)."""
    import ast

    bad = [f"{p.relative_to(ROOT)}:{n.lineno}" for p in (ROOT / "inventories").rglob("*.py")
           for n in ast.walk(ast.parse(p.read_text()))
           if (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "lab")
           or (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "lab" for a in n.names))]
    assert not bad, bad
    assert (ROOT / "lab/inventories/lab.py").exists() and (ROOT / "lab/inventories/group_data/lab.py").exists()
