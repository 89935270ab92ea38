# R1 671B does not fit one 8×H100 node (the planner says so): these serve the 70B distill.
model_repo_id = "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"
model_revision = "b1c0b44b4369b597ad119a196caf79a9c40e141e"
vllm_max_model_len = 32768
plan_gpu = "H100 SXM"
plan_gpus_per_node = 8
gpu_expected_model = "H100"
gpu_expected_count = 8
gpu_min_memory_mib = 80000
gpu_fabric_manager = "yes"
# The hosts' RAM for offline plans (the converge reads MemTotal): sizes the KV offload to host RAM.
plan_host_memory_gib = 2048
vllm_kv_offload_gib = "auto"  # opt in: the planner sizes it from the RAM
