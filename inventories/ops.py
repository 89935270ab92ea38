"""An example ops host that runs the fleet's drift check on a systemd timer (deploy/drift_timer.py).

It is kept out of the fleet inventory on purpose: it serves nothing and no gateway routes to it.
Its own SSH key is made on it; authorize that key on the fleet hosts before the first run.
"""

ops = [
    ("ops-01", {"ssh_hostname": "ops-01.r1.example", "ssh_user": "ubuntu", "_sudo": True,
                "drift_inventory": "inventories/prod.py", "drift_on_calendar": "*:0/15",
                "drift_known_hosts_file": "~/.ssh/r1-fleet-known_hosts",
                # Secret files the fleet inventory names (file: keys, TLS), at the same paths there:
                # "drift_secret_files": ["/etc/r1deploy-controller/keys", "/etc/r1deploy-controller/tls.key"],
                }),
]
