"""The local lab: Debian hosts in network namespaces, booted with systemd-nspawn, reached over SSH."""
