"""A prod-shaped fleet (tests/test_bad_inventories.py) and what an operator gets wrong in it.

Each case is one mistake applied to the fleet; it expects the (host, key) problems `r1deploy
check` must print, or the (file, line) of a group data file that does not execute. Every host
connects to 127.0.0.1 at a port of a listener the test watches; addresses in the serving data
(vllm_host_ip, gateway_workers) are loopback too, and nothing dials them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

R1 = ("deepseek-ai/DeepSeek-R1", "56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad")
LLAMA70 = ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "b1c0b44b4369b597ad119a196caf79a9c40e141e")
HOSTS = ("gpu-h200-01", "gpu-h100-01", "gpu-h100-02", "gateway-01")
SECRETS = {"HF_TOKEN": "test-value-not-a-token", "R1_API_KEY": "test-value-not-a-key"}

GROUP_DATA: dict[str, dict[str, Any]] = {
    "all": {"fleet_name": "r1", "smoke_max_tokens": 32},
    "prod": {"fleet_env": "prod", "model_hub_token_env": "HF_TOKEN", "vllm_api_key_env": "R1_API_KEY",
             "install_vllm_package": "vllm", "vllm_device": "cuda", "vllm_gpu_memory_utilization": 0.95,
             "vllm_trust_remote_code": True, "vllm_nccl_socket_ifname": "bond0", "gpu_driver_branch": "580",
             "plan_nodes": 1, "fleet_admin_networks": ["10.0.0.0/24"]},
    "h200_nodes": {"model_repo_id": R1[0], "model_revision": R1[1], "vllm_max_model_len": 65536,
                   "plan_gpu": "H200", "plan_gpus_per_node": 8, "gpu_expected_model": "H200",
                   "gpu_expected_count": 8, "gpu_min_memory_mib": 143000, "gpu_fabric_manager": "yes"},
    "h100_nodes": {"model_repo_id": LLAMA70[0], "model_revision": LLAMA70[1], "vllm_max_model_len": 32768,
                   "plan_gpu": "H100 SXM", "plan_gpus_per_node": 8, "gpu_expected_model": "H100",
                   "gpu_expected_count": 8, "gpu_min_memory_mib": 80000, "gpu_fabric_manager": "yes"},
    "gateways": {"model_repo_id": R1[0], "model_revision": R1[1], "gpu_manage": False},
}


def base_groups() -> dict[str, dict[str, dict[str, Any]]]:
    """Inventory groups: group -> host -> host data (ssh_port filled in by the test)."""
    def node(ip: str) -> dict[str, Any]:
        return {"ssh_user": "ubuntu", "_sudo": True, "vllm_host_ip": ip}
    return {
        "h200_nodes": {"gpu-h200-01": node("127.0.1.11")},
        "h100_nodes": {"gpu-h100-01": node("127.0.1.21"), "gpu-h100-02": node("127.0.1.22")},
        "gateways": {"gateway-01": {"ssh_user": "ubuntu", "_sudo": True, "fleet_role": "gateway",
                                    "gateway_workers": ["http://127.0.1.11:8000"]}},
    }


@dataclass
class Fleet:
    groups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=base_groups)
    group_data: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(GROUP_DATA))
    raw_group_files: dict[str, str] = field(default_factory=dict)  # group -> file text (replaces data)
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (text, mode) beside it
    ports: dict[str, int] = field(default_factory=dict)  # host -> the watched listener it connects to

    def host(self, name: str) -> dict[str, Any]:
        return next(hosts[name] for hosts in self.groups.values() if name in hosts)

    def write(self, where: Path) -> Path:
        (where / "group_data").mkdir(parents=True)
        for group, data in self.group_data.items():
            text = self.raw_group_files.get(group) or "".join(f"{k} = {v!r}\n" for k, v in data.items())
            (where / "group_data" / f"{group}.py").write_text(text)
        for name, (text, mode) in self.files.items():
            (where / name).write_text(text)
            os.chmod(where / name, mode)
        lines = []
        for group, hosts in self.groups.items():
            entries = [(h, {"ssh_hostname": "127.0.0.1", "ssh_port": self.ports[h],
                            **{k: str(where / "hf.token") if v == "TOKEN_FILE" else v for k, v in d.items()}})
                       for h, d in hosts.items()]
            lines.append(f"{group} = {entries!r}\n")
        lines.append("\nfrom r1deploy.fleet.inventory import validate_before_connecting\n\n"
                     "validate_before_connecting(__file__)\n")
        inventory = where / "prod.py"
        inventory.write_text("".join(lines))
        return inventory


@dataclass(frozen=True)
class Case:
    name: str
    change: Callable[[Fleet], None]
    expect: tuple[tuple[str, str], ...] = ()  # (host, key) problems
    file_line: tuple[str, int] | None = None  # group data file (relative to the inventory) and line
    env: dict[str, str | None] = field(default_factory=dict)  # controller environment changes


def on(host: str, **data: Any) -> Callable[[Fleet], None]:
    return lambda f: f.host(host).update(data)


def group(name: str, **data: Any) -> Callable[[Fleet], None]:
    return lambda f: f.group_data[name].update(data)


def both(*changes: Callable[[Fleet], None]) -> Callable[[Fleet], None]:
    def apply(f: Fleet) -> None:
        for change in changes:
            change(f)
    return apply


def also_in(host: str, source: str, target: str) -> Callable[[Fleet], None]:
    return lambda f: f.groups[target].update({host: f.groups[source][host]})


def token_file(mode: int, text: str = "test-value-not-a-token\n") -> Callable[[Fleet], None]:
    def apply(f: Fleet) -> None:
        f.files["hf.token"] = (text, mode)
        f.host("gpu-h100-01")["model_hub_token_file"] = "TOKEN_FILE"  # Fleet.write puts the path here
    return apply


def raw(group: str, text: str) -> Callable[[Fleet], None]:
    return lambda f: f.raw_group_files.update({group: text})


def second_gateway_beside(host: str) -> Callable[[Fleet], None]:
    """A gateway for the distill on the machine of `host`, on ports of its own (issue 21 item 15)."""
    def apply(f: Fleet) -> None:
        f.groups["gateways"]["gateway-02"] = {
            "ssh_user": "ubuntu", "_sudo": True, "fleet_role": "gateway", "model_repo_id": LLAMA70[0],
            "model_revision": LLAMA70[1], "gateway_port": 8090, "gateway_router_port": 8091,
            "gateway_prometheus_port": 29002, "gateway_router_green_port": 8092,
            "gateway_prometheus_green_port": 29003, "gateway_workers": ["http://127.0.1.21:8000"]}
        f.ports["gateway-02"] = f.ports[host]
    return apply


H2, H1, H1B, GW = HOSTS
# The spec requires a fleet token with seeds; the path only has to be named (no seed is contacted).
SEED_TOKEN = "~/.config/r1deploy/seed-token"
CASES = [
    # -- per-host spec values
    Case("port out of range", on(H1, vllm_port=99999), ((H1, "vllm_port"),)),
    Case("typo in a key", on(H1, vllm_prot=8001), ((H1, "vllm_prot"),)),
    Case("branch instead of a commit", on(H2, model_revision="main"), ((H2, "model_revision"),)),
    Case("branch revisions allowed in prod", on(H2, model_allow_branch_revision=True),
         ((H2, "model_allow_branch_revision"),)),
    Case("repo id without org", on(H1, model_repo_id="DeepSeek-R1"), ((H1, "model_repo_id"),)),
    Case("unknown role", on(GW, fleet_role="router"), ((GW, "fleet_role"),)),
    # issue 23 item 3: the host firewall needs where SSH comes from, as networks
    Case("firewall on, no admin networks", on(H1, fleet_admin_networks=[]), ((H1, "fleet_admin_networks"),)),
    Case("an admin network that is not one", on(H1, fleet_admin_networks=["10.0.0.0/24", "office"]),
         ((H1, "fleet_admin_networks[1]"),)),
    Case("a peer without an IP address", on(H1, vllm_host_ip=None, fleet_host_ip="gpu-h100-01.example"),
         ((H1, "fleet_host_ip"),)),
    Case("context below vLLM's minimum", on(H1, vllm_max_model_len=8), ((H1, "vllm_max_model_len"),)),
    Case("cpu device with the CUDA build", on(H1, vllm_device="cpu"), ((H1, "vllm_device"),)),
    Case("dtype spelled like torch's shorthand", on(H1, vllm_dtype="bf16"), ((H1, "vllm_dtype"),)),
    Case("no GPUs expected", on(H1, gpu_expected_count=0), ((H1, "gpu_expected_count"),)),
    # -- strings that reach files and commands
    Case("newline in the service user", on(H1, vllm_user="vllm\nExecStartPre=/bin/touch /tmp/x"),
         ((H1, "vllm_user"),)),
    Case("newline in the login user", on(H1, ssh_user="ubuntu\nProxyCommand x"), ((H1, "ssh_user"),)),
    Case("newline in an env value", on(H1, vllm_env={"NCCL_DEBUG": "INFO\nExecStart=/bin/sh"}),
         ((H1, "vllm_env['NCCL_DEBUG']"),)),
    Case("tab in an engine arg", on(H1, vllm_extra_args={"max-num-batched-tokens\t": 2048}),
         ((H1, "vllm_extra_args"),)),
    Case("relative model root", on(H1, model_root="srv/models"), ((H1, "model_root"),)),
    Case("install root escaping with ..", on(H1, install_root="/opt/../etc"), ((H1, "install_root"),)),
    Case("space in the release name", on(H1, fleet_release="r1 canary"), ((H1, "fleet_release"),)),
    Case("shell in the served name", on(GW, model_served_name="r1;reboot"), ((GW, "model_served_name"),)),
    Case("host name for a bind address", on(H1, vllm_host="localhost"), ((H1, "vllm_host"),)),
    Case("two interfaces with a space", on(H1, vllm_nccl_socket_ifname="bond0 eth0"),
         ((H1, "vllm_nccl_socket_ifname"),)),
    Case("hub endpoint without a scheme", on(H1, model_hub_endpoint="mirror.example:8090"),
         ((H1, "model_hub_endpoint"),)),
    Case("env name with a dash", on(H1, vllm_env={"NCCL-DEBUG": "INFO"}), ((H1, "vllm_env['NCCL-DEBUG']"),)),
    Case("api key reference that is not an env name", on(GW, vllm_api_key_env="R1-API-KEY"),
         ((GW, "vllm_api_key_env"),)),
    # -- secrets where files are world-readable
    Case("API key in vllm_env", on(H1, vllm_env={"VLLM_API_KEY": "abc"}), ((H1, "vllm_env['VLLM_API_KEY']"),)),
    Case("hub token in vllm_env", on(H1, vllm_env={"HF_TOKEN": "abc"}), ((H1, "vllm_env['HF_TOKEN']"),)),
    Case("password in vllm_env", on(H1, vllm_env={"S3_SECRET": "abc"}), ((H1, "vllm_env['S3_SECRET']"),)),
    Case("bearer header as an env value", on(H1, vllm_env={"EXTRA_HEADERS": "Bearer abc"}),
         ((H1, "vllm_env['EXTRA_HEADERS']"),)),
    Case("--api-key in engine args", on(H1, vllm_extra_args={"--api-key": "abc"}),
         ((H1, "vllm_extra_args['--api-key']"),)),
    Case("API_KEY in engine args", on(H1, vllm_extra_args={"API_KEY": "abc"}),
         ((H1, "vllm_extra_args['API_KEY']"),)),
    Case("hub token in engine args", on(H1, vllm_extra_args={"hf-token": "abc"}),
         ((H1, "vllm_extra_args['hf-token']"),)),
    Case("token-shaped engine arg value", on(H1, vllm_extra_args={"served-model-name": "hf_" + "a" * 34}),
         ((H1, "vllm_extra_args['served-model-name']"),)),
    # -- connection settings pyinfra only trips over when connecting
    Case("negative ssh port", on(H1, ssh_port=-22), ((H1, "ssh_port"),)),
    Case("ssh port zero", on(H1, ssh_port=0), ((H1, "ssh_port"),)),
    Case("service name as ssh port", on(H1, ssh_port="ssh"), ((H1, "ssh_port"),)),
    Case("space in the ssh host name", on(H1, ssh_hostname="gpu h100 01.example"), ((H1, "ssh_hostname"),)),
    Case("accept-new host keys in prod", on(H1, ssh_strict_host_key_checking="accept-new"),
         ((H1, "ssh_strict_host_key_checking"),)),
    Case("host key checking off in prod", on(H1, ssh_strict_host_key_checking=False),
         ((H1, "ssh_strict_host_key_checking"),)),
    Case("ssh key that does not exist", on(H1, ssh_key="/nonexistent/id_ed25519"), ((H1, "ssh_key"),)),
    Case("a lab host in a prod inventory", on(H1, fleet_env="lab"), ((H1, "fleet_env"),)),
    Case("strict host keys without the known_hosts file", on(H1, ssh_known_hosts_file="/nonexistent/known_hosts"),
         ((H1, "ssh_known_hosts_file"),)),
    Case("driver version without its minor", on(H1, gpu_driver_version="580"), ((H1, "gpu_driver_version"),)),
    Case("apt proxy without a scheme", on(H1, install_apt_proxy="proxy.example:3128"), ((H1, "install_apt_proxy"),)),
    Case("serving address that is a name", on(H1, vllm_host_ip="gpu-h100-01.example"), ((H1, "vllm_host_ip"),)),
    Case("operator account with a capital", on(H1, fleet_admin_user="R1ops"), ((H1, "fleet_admin_user"),)),
    # -- hardware
    Case("TP16 on an 8-GPU node", on(H2, vllm_tensor_parallel_size=16), ((H2, "vllm_tensor_parallel_size"),)),
    Case("TP that does not divide the heads", on(H1, vllm_tensor_parallel_size=3),
         ((H1, "vllm_tensor_parallel_size"),)),
    Case("TP × PP beyond the node", on(H1, vllm_tensor_parallel_size=4, vllm_pipeline_parallel_size=4),
         ((H1, "vllm_tensor_parallel_size"),)),
    Case("data parallel beyond the node", on(H1, vllm_tensor_parallel_size=2, vllm_data_parallel_size=8),
         ((H1, "vllm_data_parallel_size"),)),
    Case("context 8x the model's", on(H2, vllm_max_model_len=8 * 163840), ((H2, "vllm_max_model_len"),)),
    Case("context twice the distill's", on(H1, vllm_max_model_len=262144), ((H1, "vllm_max_model_len"),)),
    Case("unknown GPU name", on(H2, plan_gpu="H300", gpu_expected_model="H300", gpu_min_memory_mib=None),
         ((H2, "plan_gpu"), (H2, "gpu_expected_model"))),
    Case("planned and expected GPUs differ", on(H1, gpu_expected_model="A100 80GB"),
         ((H1, "gpu_expected_model"),)),
    Case("GPU counts disagree", on(H1, plan_gpus_per_node=4), ((H1, "gpu_expected_count"),)),
    Case("FP8 weights on a GPU without FP8",
         on(H2, plan_gpu="MI250X", gpu_expected_model="MI250X", gpu_min_memory_mib=65000),
         ((H2, "plan_gpu"),)),
    Case("FP8 quantization on a GPU without FP8",
         on(H1, plan_gpu="MI250X", gpu_expected_model="MI250X", gpu_min_memory_mib=65000,
            quant_scheme="fp8_dynamic"), ((H1, "quant_scheme"),)),
    # -- across hosts
    Case("a host in two model groups", also_in(H1B, "h100_nodes", "h200_nodes"), ((H1B, "model_repo_id"),)),
    # fixed unit and file names: one node and one gateway per machine
    Case("two nodes on one machine (issue 21 item 15)", lambda f: f.host(H1B).update(ssh_port=f.ports[H1], vllm_port=8001),
         ((H1B, "ssh_hostname"),)),
    Case("two gateways on one machine (issue 21 item 15)", second_gateway_beside(GW), (("gateway-02", "ssh_hostname"),)),
    Case("gateway port twice on one host", on(GW, gateway_prometheus_port=8080),
         ((GW, "gateway_prometheus_port"),)),
    Case("the router's green colour on blue's port (issue 23 item 1)", on(GW, gateway_router_green_port=8081),
         ((GW, "gateway_router_green_port"),)),
    Case("the green router's metrics on blue's metrics port", on(GW, gateway_prometheus_green_port=29000),
         ((GW, "gateway_prometheus_green_port"),)),
    Case("seed mirror on the serving port",
         both(group("h100_nodes", model_seed_nodes=[H1], model_seed_token_file=SEED_TOKEN), on(H1, model_seed_port=8000)),
         ((H1, "model_seed_port"),)),
    Case("serving on the SSH port", lambda f: f.host(H1).update(vllm_port=f.ports[H1]),
         ((H1, "vllm_port"),)),
    Case("a gateway beside a node on its port",
         lambda f: f.host(GW).update(ssh_port=f.ports[H2], gateway_port=8000),
         ((GW, "gateway_port"),)),
    Case("one serving address for two nodes", on(H1B, vllm_host_ip="127.0.1.21"), ((H1B, "vllm_host_ip"),)),
    Case("gateway worker that is no node", on(GW, gateway_workers=["http://127.0.1.99:8000"]),
         ((GW, "gateway_workers[0]"),)),
    Case("gateway worker serving another model", on(GW, gateway_workers=["http://127.0.1.21:8000"]),
         ((GW, "gateway_workers[0]"),)),
    Case("gateway worker on the wrong port",
         on(GW, gateway_workers=["http://127.0.1.11:8000", "http://127.0.1.11:9000"]), ((GW, "gateway_workers[1]"),)),
    Case("gateway worker by its SSH address, not where it serves (issue 21 item 4)",
         on(GW, gateway_workers=["http://127.0.0.1:8000"]), ((GW, "gateway_workers[0]"),)),
    Case("gateway worker over https (issue 21 item 4)", on(GW, gateway_workers=["https://127.0.1.11:8000"]),
         ((GW, "gateway_workers[0]"),)),
    Case("gateway worker named twice, by address and by name (issue 21 item 4)",
         on(GW, gateway_workers=["http://127.0.1.11:8000", "http://gpu-h200-01:8000/"]), ((GW, "gateway_workers[1]"),)),
    Case("gateway worker without a scheme", on(GW, gateway_workers=["127.0.1.11:8000"]),
         ((GW, "gateway_workers"),)),
    Case("gateway worker listed twice", on(GW, gateway_workers=["http://127.0.1.11:8000"] * 2),
         ((GW, "gateway_workers"),)),
    Case("gateway for a model no node serves",
         lambda f: (f.host(GW).pop("gateway_workers"),
                    f.host(GW).update(model_repo_id="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")),
         ((GW, "model_repo_id"),)),
    Case("seed that is not in the inventory", on(H1B, model_seed_nodes=["gpu-h100-09"], model_seed_token_file=SEED_TOKEN),
         ((H1B, "model_seed_nodes"),)),
    Case("seed serving another model", on(H1B, model_seed_nodes=[H2], model_seed_token_file=SEED_TOKEN), ((H1B, "model_seed_nodes"),)),
    Case("seed that is a gateway", on(H1B, model_seed_nodes=[GW], model_seed_token_file=SEED_TOKEN), ((H1B, "model_seed_nodes"),)),
    Case("seed that does not know it is one", on(H1B, model_seed_nodes=[H1], model_seed_token_file=SEED_TOKEN), ((H1B, "model_seed_nodes"),)),
    Case("seed listed twice", group("h100_nodes", model_seed_nodes=[H1, H1], model_seed_token_file=SEED_TOKEN),
         ((H1, "model_seed_nodes"), (H1B, "model_seed_nodes"))),
    Case("two-node replicas with one node", on(H2, plan_nodes=2), ((H2, "fleet_group"),)),
    # -- secrets on the controller
    Case("hub token variable unset", lambda f: None, ((H2, "model_hub_token_env"), (H1, "model_hub_token_env"),
                                                      (H1B, "model_hub_token_env")), env={"HF_TOKEN": None}),
    Case("API key variable unset on the gateway", on(GW, vllm_api_key_env="R1_GATEWAY_KEY"),
         ((GW, "vllm_api_key_env"),)),
    Case("client key variable unset on the gateway", on(GW, gateway_api_keys={"ci": "env:R1_CLIENT_CI"}),
         ((GW, "gateway_api_keys['ci']"),)),
    Case("vLLM key file that does not exist", on(GW, vllm_api_key_env=None, vllm_api_key_file="/nonexistent/vllm.key"),
         ((GW, "vllm_api_key_file"),)),
    Case("token file that does not exist", on(H1, model_hub_token_file="/nonexistent/hf.token"),
         ((H1, "model_hub_token_file"),)),
    Case("token file readable by others", token_file(0o644), ((H1, "model_hub_token_file"),)),
    Case("empty token file", token_file(0o600, ""), ((H1, "model_hub_token_file"),)),
    # -- group data files that do not execute
    Case("syntax error in group data", raw("h100_nodes", "plan_gpu = 'H100 SXM'\nplan_gpus_per_node = = 8\n"),
         file_line=("group_data/h100_nodes.py", 2)),
    Case("undefined name in group data", raw("prod", "fleet_env = 'prod'\n\nvllm_port = PORT\n"),
         file_line=("group_data/prod.py", 3)),
    Case("import of a missing module in group data", raw("gateways", "from fleet_secrets import KEY\n"),
         file_line=("group_data/gateways.py", 1)),
]

GOOD = [
    Case("the fleet as written", lambda f: None),
    Case("long context with a rope-scaling override",
         on(H1, vllm_max_model_len=262144,
            vllm_extra_args={"hf-overrides": {"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}})),
    Case("a token file only its owner reads", token_file(0o600)),
    Case("gateway worker by inventory name, with a trailing slash (issue 21 item 4)",
         on(GW, gateway_workers=["http://gpu-h200-01:8000/"])),
    Case("a gateway beside a node (own ports, shared SSH)",
         lambda f: f.host(GW).update(ssh_port=f.ports[H2])),
    Case("seeds that are nodes of the model", group("h100_nodes", model_seed_nodes=[H1], model_seed_token_file=SEED_TOKEN)),
    Case("accept-new in a lab fleet", both(group("prod", fleet_env="lab"),
                                           on(H1, ssh_strict_host_key_checking="accept-new",
                                              ssh_known_hosts_file="/nonexistent/known_hosts"))),
]
