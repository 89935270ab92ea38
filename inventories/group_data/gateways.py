# The gateway routes to the R1 nodes; its model keys name what they serve (smoke tests ask for it).
model_repo_id = "deepseek-ai/DeepSeek-R1"
model_revision = "56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad"
gpu_manage = False
