# Production defaults (per-group models live in their own group files: pyinfra gives no
# precedence between two groups of one host, so no key is set in both). Production: pinned commits only, CUDA vLLM, NVIDIA driver 580 with open modules.
fleet_env = "prod"
# SSH: only hosts whose key the operator pinned (`r1deploy hostkey --inventory inventories/prod.py`
# shows the fingerprints and appends them to this file after a yes). Unknown or changed keys are refused.
ssh_strict_host_key_checking = "yes"
ssh_known_hosts_file = "~/.ssh/r1-prod.known_hosts"
# The host firewall (roles/firewall; on by default in prod): SSH only from where operators work, and
# Prometheus's UI from there too; each host's other ports only from the peers that need them.
fleet_admin_networks = ["10.20.9.0/24"]
# Secrets are references resolved on the controller, never values in the inventory.
model_hub_token_env = "HF_TOKEN"
vllm_api_key_env = "R1_API_KEY"

install_vllm_package = "vllm"
install_vllm_version = "0.26.0"

vllm_device = "cuda"
# vllm_gpu_memory_utilization and vllm_trust_remote_code are per model (the model group files):
# vLLM's R1 recipe sets both, the Llama distill needs neither (vLLM's default 0.9, native arch).
vllm_nccl_socket_ifname = "bond0"

# The edge (r1deploy's docs/edge.md): clients' keys by name, each a reference resolved on the
# controller (env:VAR or file:PATH, 0600), never the key; without keys every request is a 401.
# Each gateway's TLS certificate is its own host data (inventories/prod.py).
gateway_api_keys = {
    "chat-app": "env:R1_CLIENT_KEY_CHAT_APP",
    "batch-jobs": "file:~/.config/r1deploy/clients/batch-jobs.key",
}

gpu_driver_branch = "580"
gpu_require_ecc = True
gpu_reboot_batch_size = 1

plan_nodes = 1
# FP8 where the GPUs have it (all Hopper here): FP8 weights for the BF16 distills, FP8 KV where it
# raises the concurrency the SLO allows. The quantize stage's gate measures the accuracy it costs.
plan_fp8 = True
plan_capex_usd = 320000
plan_power_kw = 10.2
plan_power_usd_per_kwh = 0.12
plan_cloud_usd_per_mtok = 2.19
plan_tokens_per_day = 400000000
