"""The edge's pure core: secret references, the rendered nginx config, the spec's gateway keys."""

import pytest

from r1deploy.serving import edge
from r1deploy.spec import SpecError, spec_from_host_data

BASE = {"model_repo_id": "org/m", "model_revision": "a" * 40}


def _spec(**data):
    return spec_from_host_data("gw.example", {**BASE, **data})


def test_secret_references_resolve_on_the_controller(tmp_path, monkeypatch):
    (tmp_path / "ci").write_text("ci-key-0123456789\n")
    monkeypatch.setenv("R1_TEST_ALICE", "alice-key-0123456789")
    spec = _spec(gateway_api_keys={"alice": "env:R1_TEST_ALICE", "ci": f"file:{tmp_path / 'ci'}"})
    assert edge.client_keys(spec) == {"alice": "alice-key-0123456789", "ci": "ci-key-0123456789"}


@pytest.mark.parametrize("value, said", [(None, "is not set"), ("short", "8-512"), ('a"b; }0123456', "8-512")])
def test_unusable_secrets_are_named_not_shown(monkeypatch, value, said):
    if value is not None:
        monkeypatch.setenv("R1_TEST_K", value)
    with pytest.raises(edge.SecretError, match=said) as err:
        edge.client_keys(_spec(gateway_api_keys={"k": "env:R1_TEST_K"}))
    assert "gateway_api_keys['k']" in str(err.value) and (value is None or value not in str(err.value))


def test_the_same_key_twice_is_refused(monkeypatch):
    monkeypatch.setenv("R1_TEST_K", "same-key-0123456789")
    with pytest.raises(edge.SecretError, match="same key"):
        edge.client_keys(_spec(gateway_api_keys={"a": "env:R1_TEST_K", "b": "env:R1_TEST_K"}))


@pytest.mark.parametrize("data, key", [
    ({"gateway_api_keys": {"alice": "sk-literal-key"}}, "gateway_api_keys"),
    ({"gateway_api_keys": {"bad name": "env:X"}}, "gateway_api_keys"),
    ({"gateway_tls_cert_file": "/c.pem"}, "gateway_*"),
    ({"gateway_router_port": 8080}, "gateway_*"),
    ({"vllm_api_key_env": "K", "vllm_api_key_file": "/k"}, "vllm_*"),
])
def test_spec_refuses_keys_in_the_inventory_and_half_tls(data, key):
    with pytest.raises(SpecError) as err:
        _spec(**data)
    assert err.value.errors[0].key == key
    assert "sk-literal-key" not in str(err.value)


def test_site_has_no_secret_and_proxies_only_openai_routes():
    site = edge.render_site(_spec(gateway_tls_cert_file="/c", gateway_tls_key_file="/k"), "gw", tls=True)
    assert "listen 0.0.0.0:8080 ssl;" in site and f"include {edge.ROUTER_UPSTREAM};" in site
    assert "^/v1/(chat/completions|completions|models)$" in site and "return 404" in site
    log_format = site[site.index("log_format"):site.index("upstream")]
    assert "proxy_buffering off;" in site and "$request " not in log_format and "$uri" in log_format
    keys = edge.render_keys({"alice": "alice-key-0123456789"}, "node-key-0123456789")
    assert '"Bearer alice-key-0123456789" alice;' in keys and 'default "Bearer node-key-0123456789";' in keys
    assert "alice-key" not in site


def test_router_admin_is_loopback_and_engine_binds_the_fleet_address():
    spec = _spec()
    assert edge.router_admin(spec).startswith("http://127.0.0.1:$(")  # the live colour's port, read on the host
    assert edge.engine_local_url(spec, "10.9.0.5") == "http://10.9.0.5:8000"
    assert edge.engine_local_url(_spec(vllm_host="0.0.0.0"), "10.9.0.5") == "http://127.0.0.1:8000"


def test_issue24_item4_make_labs_printed_key_command_works_as_root_without_sudo():
    """issue 24 item 4: `make lab` prints `export R1_API_KEY=$(cat …)` in a root shell (sudo may be
    absent) and `$(sudo cat …)` for anyone else, also after `sudo make lab` (the key file is 0600 root)."""
    from lab import edge as lab_edge

    assert lab_edge.read_as_root(0, "") == "" and lab_edge.read_as_root(0, "root") == ""
    assert lab_edge.read_as_root(0, "alice") == "sudo " and lab_edge.read_as_root(1000, "") == "sudo "


@pytest.mark.parametrize("sudo", ["", "sudo "])
def test_issue24_item4_make_labs_printed_commands_run_as_printed(tmp_path, sudo):
    """The printed lines, run by bash: with no sudo on PATH for a root shell; with one (that runs its
    command) otherwise, where the CA of the root-only edge directory is copied out first."""
    import subprocess

    from lab import edge as lab_edge

    bin_dir, key, ca = tmp_path / "bin", tmp_path / "lab-user", tmp_path / "ca.crt"
    bin_dir.mkdir()
    key.write_text("r1lab-secret\n")
    ca.write_text("CA\n")
    fake = {"curl": '[ -r "$3" ] || exit 77; echo "$@"'} | ({"sudo": '"$@"'} if sudo else {})
    for name, body in fake.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    printed = lab_edge.try_it("https://10.77.0.9:8080", str(key), str(ca), '{"model": "m"}', sudo)
    script = "set -e\n" + "\n".join(line.strip() for line in printed.splitlines() if line.strip())
    run = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert "Bearer r1lab-secret" in run.stdout and "https://10.77.0.9:8080/v1/chat/completions" in run.stdout
    assert ("sudo cat" in printed) == bool(sudo) and (tmp_path / "r1lab-ca.crt").exists() == bool(sudo)
