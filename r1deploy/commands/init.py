"""`r1deploy init DIR`: an operator's own repository, scaffolded from the package's example fleet.

It writes the inventory (the example's groups: R1 nodes, serving groups, the distill's nodes, the
gateways), their group data with every spec key listed commented in group_data/all.py, a
deploy.py that imports r1deploy's deploy (pyinfra's packaged-deploy convention), a .gitignore for
secrets and reports, and a README with the next commands. It never overwrites: when any file it
would write exists, it names them and writes nothing.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from r1deploy.paths import EXAMPLES
from r1deploy.specdoc import group_data_keys

EXAMPLE = "prod"  # the example inventory the scaffold starts from (inventories/prod.py)
INVENTORY = "inventory"

DEPLOYS = {  # file -> (what it runs, the function of r1deploy.deploys)
    "deploy.py": ("bare hosts to a serving fleet: every stage", "converge"),
    "bootstrap.py": ("new hosts: the operator account, key-only SSH", "bootstrap_hosts"),
    "gpu_hosts.py": ("GPU hosts only: driver, NCCL, fabric manager, gate", "provision_gpu_hosts"),
}

GITIGNORE = """\
# Secrets stay out of git: the inventory holds references (env:VAR, file:PATH), never values.
*.key
*.pem
*.token
secrets/
# Drift and bench reports, local venvs.
reports/
.venv/
__pycache__/
"""

README = """\
# {name}: an r1deploy fleet

Made by `r1deploy init` (r1deploy {version}). Edit `inventory.py` (your hosts) and `group_data/`
(your models and settings; `group_data/all.py` lists every key with its default,
`r1deploy docs` writes the full reference). Then, from this directory:

    r1deploy check inventory.py                      # the inventory against the spec, no host touched
    r1deploy plan --inventory inventory.py           # does the model fit, which layout, what it costs
    r1deploy render --inventory inventory.py --host gpu-h200-01 --out rendered/
    r1deploy hostkey --inventory inventory.py        # pin the hosts' SSH keys
    pyinfra inventory.py bootstrap.py --data ssh_user=root   # once per new host
    pyinfra -y inventory.py deploy.py                # converge: bare hosts to a serving fleet
    REQUESTS_CA_BUNDLE=ca.crt r1deploy smoke https://GATEWAY:8080 --model DeepSeek-R1 --api-key-file KEY
    r1deploy drift-run inventory.py                  # read-only drift check (exit 0/1/2)
    r1deploy rollback inventory.py                   # every node back one release, rolling

Secrets are references resolved on the controller: export HF_TOKEN, R1_API_KEY and the client keys
named in group_data/inventory.py before `check` (or `check --no-secrets`) and before deploying.
"""


def _groups(inventory: Path) -> list[str]:
    """The inventory's groups: its top-level lists of hosts (pyinfra's own rule)."""
    tree = ast.parse(inventory.read_text())
    return [t.id for node in tree.body if isinstance(node, ast.Assign) and isinstance(node.value, ast.List)
            for t in node.targets if isinstance(t, ast.Name) and not t.id.startswith("_")]


def _renamed(text: str) -> str:
    """The example's own paths, as they are in the operator's repository."""
    return (text.replace(f"inventories/group_data/{EXAMPLE}.py", f"group_data/{INVENTORY}.py")
            .replace(f"group_data/{EXAMPLE}.py", f"group_data/{INVENTORY}.py")
            .replace(f"inventories/{EXAMPLE}.py", f"{INVENTORY}.py"))


def scaffold(name: str) -> dict[str, str]:
    """Relative path -> content of every file init writes."""
    from r1deploy import __version__

    example = EXAMPLES / f"{EXAMPLE}.py"
    files = {f"{INVENTORY}.py": _renamed(example.read_text())}
    # pyinfra gives the inventory file's own name to a group of all its hosts: prod -> inventory.
    for group, target in [("all", "all"), (EXAMPLE, INVENTORY), *((g, g) for g in _groups(example))]:
        src = EXAMPLES / "group_data" / f"{group}.py"
        if src.exists():
            files[f"group_data/{target}.py"] = _renamed(src.read_text())
    files["group_data/all.py"] += "\n" + group_data_keys()
    for fname, (what, fn) in DEPLOYS.items():
        files[fname] = (f'"""{what}: pyinfra -y {INVENTORY}.py {fname}"""\n\n'
                        f"from r1deploy.deploys import {fn}\n\n{fn}()\n")
    files[".gitignore"] = GITIGNORE
    files["README.md"] = README.format(name=name, version=__version__)
    return files


def init(directory: str) -> list[Path]:
    """Write the scaffold into directory; refuse (writing nothing) if any of its files exist."""
    root = Path(directory)
    files = scaffold(root.resolve().name)
    taken = [root / rel for rel in files if (root / rel).exists()]
    if taken:
        raise FileExistsError("r1deploy init writes nothing over existing files; these exist: "
                              + ", ".join(str(p) for p in taken))
    written = []
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written


def _init_cmd(args) -> int:
    try:
        written = init(args.dir)
    except FileExistsError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{len(written)} files written to {args.dir}; next: cd {args.dir} && r1deploy check {INVENTORY}.py "
          "(see its README.md)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("init", help="scaffold an operator's fleet repository (inventory, group data, deploy.py)")
    p.add_argument("dir", help="the directory to write (created; existing files are never overwritten)")
    p.set_defaults(func=_init_cmd)
