"""Rules for spec strings that reach files and commands on hosts (unit files, env files, argv).

A newline in a user name adds a line to a systemd unit; a key in ``vllm_env`` lands in a
world-readable file. These checks refuse such values with the reference to use instead.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Callable, Iterator
from typing import Any

# Keys whose text goes only into an HTTP request body, where a newline is ordinary text.
FREE_TEXT_KEYS = {"smoke_prompt"}

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
UNIX_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # what useradd creates (Debian's default rule)
LOGIN_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")  # an existing account we log in as
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")
# A name used in file and unit names (fleet_name, fleet_release) or as the served model name.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SERVED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$")

SECRET_WORDS = ("token", "key", "secret", "password", "passwd", "apikey", "credential", "credentials")
# Bearer headers and the shapes of common tokens (Hugging Face, OpenAI-style keys).
SECRET_VALUE = re.compile(r"^\s*(bearer\s|authorization\b)|^hf_[A-Za-z0-9]{20,}$|^sk-[A-Za-z0-9_-]{16,}$",
                          re.IGNORECASE)


def control_characters(key: str, value: Any) -> Iterator[tuple[str, str]]:
    """(key as the operator wrote it, reason) for every string in ``value`` holding a control character."""
    if key in FREE_TEXT_KEYS:
        return
    if isinstance(value, str):
        bad = CONTROL.search(value)
        if bad:
            yield key, f"contains a control character ({bad.group()!r}); it would reach files and commands on the host"
    elif isinstance(value, dict):
        for sub, item in value.items():
            if isinstance(sub, str) and CONTROL.search(sub):
                yield f"{key}[{sub!r}]", "the name contains a control character"
            yield from control_characters(f"{key}[{sub!r}]", item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from control_characters(f"{key}[{i}]", item)


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def secret_reference(name: str) -> str:
    """The `_env`/`_file` reference that should carry the secret an env/arg name suggests."""
    words = _words(name)
    if "hf" in words or "hub" in words or "hugging" in "".join(words):
        return "model_hub_token_env or model_hub_token_file"
    return "vllm_api_key_env"


def looks_like_secret_name(name: str) -> bool:
    """API_KEY, --api-key, Api_Key, HF_TOKEN, DB_PASSWORD, --hf-token ... in any spelling."""
    words = _words(name)
    return bool(words) and ("apikey" in "".join(words) or words[-1] in SECRET_WORDS)


def looks_like_secret_value(value: Any) -> bool:
    return isinstance(value, str) and bool(SECRET_VALUE.search(value))


def secret_problem(what: str, name: str, value: Any) -> str | None:
    """Why a vllm_env/vllm_extra_args entry may not be there, or None."""
    if looks_like_secret_name(name):
        return (f"{name!r} looks like a secret; {what} is written to world-readable files: "
                f"use {secret_reference(name)} (a reference resolved on the controller) instead")
    if looks_like_secret_value(value):
        return (f"the value of {name!r} looks like a credential; use {secret_reference(name)} "
                "(a reference resolved on the controller) instead")
    return None


def host_path_problem(path: str) -> str | None:
    """A path on the hosts: absolute and normalised (no '..', no '//' tricks)."""
    if not path.startswith("/"):
        return f"{path!r} is not an absolute path"
    if ".." in path.split("/") or (path != "/" and posixpath.normpath(path) != path.rstrip("/")):
        return f"{path!r} is not a normalised absolute path (no '..', '.', or '//')"
    return None


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def hostname_problem(text: str) -> str | None:
    if is_ip(text) or HOSTNAME.match(text):
        return None
    return f"{text!r} is neither a host name nor an IP address"


# --------------------------------------------------------------------------- checks for spec fields


class KeyedError(ValueError):
    """A rule on an entry of a field or across fields: carries the inventory key the operator wrote."""

    def __init__(self, key: str, reason: str):
        super().__init__(reason)
        self.key = key

# Each returns a function of one value that raises ValueError (pydantic's field error) or
# returns the value; spec.py turns them into field validators.

def pattern(regex: re.Pattern[str], what: str) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if v is not None and not regex.match(v):
            raise ValueError(f"{v!r} is not a valid {what}")
        return v
    return check


def host_path(v: str) -> str:
    problem = host_path_problem(v)
    if problem:
        raise ValueError(problem)
    return v


def ip_address(v: str | None) -> str | None:
    if v is not None and not is_ip(v):
        raise ValueError(f"{v!r} is not an IP address (a bind address: 0.0.0.0, :: or one of the host's)")
    return v


def host_ip(v: str | None) -> str | None:
    if v is not None and not is_ip(v):
        raise ValueError(f"{v!r} is not an IP address (the host's address on the fleet network)")
    return v


def networks(key: str) -> Callable[[Any], Any]:
    """CIDR networks (an address alone is its /32 or /128); a bad entry names its index."""
    def check(v: list[str]) -> list[str]:
        for i, net in enumerate(v):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise KeyedError(f"{key}[{i}]", f"{net!r} is not a network (CIDR, e.g. 10.0.0.0/24)") from None
        return v
    return check


def url(v: str | None) -> str | None:
    if v is not None and not re.match(r"^https?://[^\s/?#]+(/\S*)?$", v):
        raise ValueError(f"{v!r} is not an http(s):// URL")
    return v


def worker_urls(v: list[str] | None) -> list[str] | None:
    for item in v or []:
        if not WORKER_URL.match(item):
            raise ValueError(f"{item!r} is not a worker URL like http://10.0.0.1:8000")
    if v is not None and len(set(v)) != len(v):
        raise ValueError(f"lists a worker twice: {v}")
    return v


def unique(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        raise ValueError(f"lists a host twice: {v}")
    return v


def one_of(choices: set[str]) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if v not in choices:
            raise ValueError(f"{v!r} is not one of {', '.join(sorted(choices))}")
        return v
    return check


def no_secrets(what: str, env_names: bool = False) -> Callable[[Any], Any]:
    """vllm_env / vllm_extra_args: refuse secrets (and, for env, names that are not env names)."""
    def check(v: dict[str, Any]) -> dict[str, Any]:
        for name, value in v.items():
            problem = secret_problem(what, name, value)
            if env_names and not ENV_NAME.match(name):
                problem = f"{name!r} is not an environment variable name"
            if problem:
                raise KeyedError(f"{what}[{name!r}]", problem)
        return v
    return check


WORKER_URL = re.compile(r"^https?://[^\s/?#]+:\d+/?$")
DRIVER_BRANCH = re.compile(r"^\d{3,4}$")
DRIVER_VERSION = re.compile(r"^\d{3,4}\.\d+(\.\d+)*$")
IFNAME = re.compile(r"^\^?=?[A-Za-z0-9_.:-]{1,15}(,\^?=?[A-Za-z0-9_.:-]{1,15})*$")
VLLM_DTYPES = {"auto", "half", "float16", "bfloat16", "float", "float32"}
