"""r1deploy: the functional core (spec, planner, catalog, hub mirror, smoke, drift). No SSH here."""

__version__ = "0.1.0"

# What the host agent (weights pulls, smoke checks) needs on a host, pinned: pyinfra's pip
# operation compares exact versions, and hosts install from the same wheelhouse/index.
AGENT_REQUIREMENTS = ["huggingface-hub==2.4.0", "requests==2.34.2", "pydantic==2.14.4"]
