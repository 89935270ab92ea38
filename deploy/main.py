"""The main job: bare hosts to a serving R1 fleet behind a gateway.

    pyinfra inventories/prod.py deploy/main.py [--dry] [--diff] [--limit HOST]

Stages per node: preflight, base, firewall, GPU host, weights, quantize (when quant_scheme is set), vLLM,
serve (the release), rollout (batches: drain, restart, warm-up, smoke, rejoin; rollback on failure).
Gateways: preflight, base, firewall, then — after the last batch — gateway and smoke through it. The whole inventory is validated
before the first operation of the first host, so a bad inventory touches no host.
"""

from r1deploy.deploys import converge

converge()
