"""`r1deploy render`: one host's vLLM config, environment and unit, rendered from an inventory into a
directory. The inventory is loaded here; rendering (``r1deploy.serving.render``) is handed the spec
and the host's serving group as values."""

from __future__ import annotations

from pathlib import Path

from r1deploy.serving.render import planned_engine, render_node


def _render_cmd(args) -> int:
    from r1deploy.fleet.inventory import load_specs

    specs = load_specs(args.inventory)
    if args.host not in specs:
        raise SystemExit(f"no host {args.host!r} in {args.inventory} (hosts: {', '.join(specs)})")
    spec = specs[args.host]
    from r1deploy.fleet.groups import group_of

    pe = planned_engine(spec, args.gpu, args.gpus, args.gpu_memory_mib)
    node = render_node(spec, args.host, planned=pe.args, plan_source=pe.source, planned_env=pe.env,
                       group=group_of(specs, args.host), gpus_per_node=pe.gpus_per_node)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, content in node.files.items():
        (out / name).write_text(content)
    print(f"release {node.release}: {', '.join(node.files)} written to {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("render", help="render a host's vLLM config, environment and unit to a directory")
    p.add_argument("--inventory", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--gpu", help="GPU model the plan assumes (default: the spec's plan_gpu)")
    p.add_argument("--gpus", type=int, help="GPUs per node the plan assumes")
    p.add_argument("--gpu-memory-mib", type=int)
    p.set_defaults(func=_render_cmd)
