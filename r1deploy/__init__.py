"""r1deploy: the functional core, no SSH. At the top: the spec (spec.py, spec_strings.py), the CLI
(cli.py) and the host agent's path guard (guard.py); the rooms: planner/, serving/, fleet/, drift/,
gpu/, observe/, and the host agent's weights/ and mirror/."""

__version__ = "0.1.0"

# What the host agent (weights pulls, smoke checks) needs on a host, pinned: pyinfra's pip
# operation compares exact versions, and hosts install from the same wheelhouse/index.
AGENT_REQUIREMENTS = ["huggingface-hub==2.4.0", "requests==2.34.2", "pydantic==2.14.4"]
