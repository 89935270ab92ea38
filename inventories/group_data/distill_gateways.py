# The gateway of the 70B distill (gateway-02): its own machine, as every gateway (two on one
# machine would share vllm-router.service and nginx's files). It routes to every node of its model.
model_repo_id = "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"
model_revision = "b1c0b44b4369b597ad119a196caf79a9c40e141e"
gpu_manage = False
