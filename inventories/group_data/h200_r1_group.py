# Full R1 (671B, FP8) over two 8×H200 nodes as one serving group: DP16 + EP (see inventories/prod.py).
model_repo_id = "deepseek-ai/DeepSeek-R1"
model_revision = "56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad"
vllm_max_model_len = 65536
# vLLM's DeepSeek-R1 recipe: --trust-remote-code, and 0.95 of GPU memory for a larger KV cache
# (vLLM's default is 0.9).
vllm_trust_remote_code = True
vllm_gpu_memory_utilization = 0.95
vllm_nccl_ib_hca = "mlx5"
plan_gpu = "H200"
plan_gpus_per_node = 8
gpu_expected_model = "H200"
gpu_expected_count = 8
gpu_min_memory_mib = 143000
gpu_fabric_manager = "yes"
