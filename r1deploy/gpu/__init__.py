"""GPU hosts from command output, pure: NVIDIA's and AMD's parsers (nvidia.py, amd.py), which vendor a
host has (vendor.py), the deeper health checks (health.py), the verification gates (gate.py,
amd_gate.py), the all-reduce (allreduce.py) and Debian package versions (dpkg.py). The gate also
runs standalone on a bare host (`python3 -m r1deploy.gpu.gate`, standard library only)."""
