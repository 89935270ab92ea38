"""Serving one node: the release rendered from the spec (vLLM config, env, unit; render.py), vLLM's
multi-node launch (launch.py), the edge's keys, TLS and addresses (edge.py), AMD's ROCm container
(rocm_vllm.py), quantization (quantize.py), and what runs on a node through the host agent:
the warm-up and smoke clients (warmup.py, smoke.py) and the CPU build's `vllm serve` (vllm_cli.py)."""
