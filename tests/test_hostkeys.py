"""`r1deploy hostkey`: fingerprints as ssh-keygen prints them, and what gets pinned when (no network)."""

import base64
import hashlib
import hmac
import subprocess

import pytest

from r1deploy.fleet.hostkeys import HostKey, decide, known_hosts_name, parse_lines, pinned_keys


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two real ed25519 public keys (type, base64) and ssh-keygen's own fingerprints of them."""
    out = []
    for name in ("a", "b"):
        path = tmp_path_factory.mktemp("k") / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        kind, key = path.with_suffix(".pub").read_text().split()[:2]
        printed = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
        out.append((HostKey(kind, key), printed))
    return out


def test_fingerprint_is_what_ssh_keygen_prints(keys):
    for key, printed in keys:
        assert key.fingerprint == printed


def test_names_off_port_22_are_bracketed():
    assert known_hosts_name("gpu-01.r1.example") == "gpu-01.r1.example"
    assert known_hosts_name("gpu-01.r1.example", 2222) == "[gpu-01.r1.example]:2222"


def test_pinned_keys_match_plain_lists_and_hashed_names(keys):
    (a, _), (b, _) = keys
    salt = b"0123456789abcdef0123"
    mac = hmac.new(salt, b"10.0.0.5", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(mac).decode()}"
    text = (f"# comment\n@cert-authority * {a.type} {a.key}\nh1,h2 {a.type} {a.key}\n"
            f"{hashed} {b.type} {b.key}\n")
    assert pinned_keys(text, "h2") == {a}
    assert pinned_keys(text, "10.0.0.5") == {b}
    assert pinned_keys(text, "10.0.0.6") == set()
    assert len(parse_lines(text)) == 2  # the comment and the marker line are skipped


def test_a_new_host_pins_all_offered_keys_or_only_the_expected_one(keys):
    (a, fa), (b, _) = keys
    assert decide("h", [a, b], "").pin == [a, b]
    expected = decide("h", [a, b], "", expect=fa)
    assert (expected.status, expected.pin) == ("new", [a])
    wrong = decide("h", [a, b], "", expect="SHA256:not-it")
    assert (wrong.status, wrong.pin, wrong.ok) == ("mismatch", [], False)


def test_a_pinned_host_with_another_key_is_refused_and_nothing_is_pinned(keys):
    (a, _), (b, _) = keys
    pinned = f"h {a.type} {a.key}\n"
    assert decide("h", [a], pinned).status == "pinned"
    changed = decide("h", [b], pinned)
    assert (changed.status, changed.pin, changed.ok) == ("changed", [], False)


def test_no_keys_back_is_could_not_check():
    assert decide("h", [], "").status == "unreachable"
