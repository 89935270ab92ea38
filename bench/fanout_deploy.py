"""The weights stage alone (no vLLM), for bench/fanout.py: R1BENCH_STAGE=base installs the agent,
R1BENCH_STAGE=weights pulls (from upstream, or fanned out when model_seed_nodes is set)."""

import os

from r1deploy.roles.base import base
from r1deploy.roles.weights import weights

if os.environ.get("R1BENCH_STAGE", "weights") == "base":
    base()
else:
    weights()
