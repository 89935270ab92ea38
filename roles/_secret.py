"""An operation for secret files: uploaded only when their hash differs, never shown in --diff or logs."""

import os
import uuid
from io import BytesIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, operation
from pyinfra.api.util import get_file_sha256
from pyinfra.facts.files import File, Sha256File


@operation()
def secret_file(path: str, content: str, user: str = "root", group: str | None = None, mode: str = "600",
                present: bool = True):
    """Like files.put, but the content is never diffed or printed; only its hash is compared.

    The secret is staged in a root-only (0700) directory beside the target and installed with its
    final owner and mode in one step, so no reader ever sees it with wider permissions. A login
    user that is not root (`_sudo`) cannot write there over SFTP: its upload goes first into a
    fresh 0700 directory it owns (random name, made with mkdir, so nobody can have made it first),
    and sudo copies it into the staging directory. pyinfra's own sudo upload would pass through a
    0644 file in /tmp.
    """
    data = content.encode()
    group = group or user
    info = host.get_fact(File, path=path)
    if not present:  # the spec names no such secret (any more): nothing of it stays on the host
        if info:
            yield f"rm -f {path}"
        return
    remote_sha = host.get_fact(Sha256File, path=path) if info else None
    if remote_sha != get_file_sha256(BytesIO(data)):
        stage_dir = f"{os.path.dirname(path)}/.r1deploy-staging"
        stage = f"{stage_dir}/{os.path.basename(path)}"
        private = f"/tmp/r1deploy-upload-{uuid.uuid4().hex}"
        yield f"install -d -m 700 -o root -g root {stage_dir}"
        # Under sudo, SUDO_USER is the login user; logged in as root there is no hand-over.
        yield f'mkdir -m 700 {private} && chown "${{SUDO_USER:-root}}" {private}'
        yield FileUploadCommand(BytesIO(data), stage, remote_temp_filename=f"{private}/upload")
        yield f"rm -rf {private} && install -m {mode} -o {user} -g {group} {stage} {path} && rm -f {stage}"
    elif info and (info.get("user") != user or str(info.get("mode")) != mode.lstrip("0")):
        yield f"chown {user}:{group} {path} && chmod {mode} {path}"


def resolved(what):
    """Run a controller-side secret lookup; a missing secret stops the deploy naming host and key."""
    from pyinfra.api import DeployError

    from r1deploy.serving.edge import SecretError

    try:
        return what()
    except SecretError as exc:
        raise DeployError(f"{host.name}: {exc}") from None


def engine_key_files(spec, engine: bool) -> list:
    """The nodes' vLLM key where this host needs it, root-only: the curl header file every check on
    the host reads (-H @file, so never argv), and on nodes the engine's secret.env."""
    from r1deploy.serving.edge import (
        AUTH_HEADER,
        SECRET_ENV,
        auth_header,
        secret_env,
        vllm_api_key,
        vllm_api_key_previous,
    )

    key = resolved(lambda: vllm_api_key(spec))
    previous = resolved(lambda: vllm_api_key_previous(spec))
    if key is None:
        return [secret_file(name="vLLM API key: none (absent)", path=path, content="", present=False)
                for path in ([AUTH_HEADER, SECRET_ENV] if engine else [AUTH_HEADER])]
    if engine:
        announced_rotation(key, previous)
    ops = [secret_file(name="vLLM API key for checks on this host (0600 root)", path=AUTH_HEADER,
                       content=auth_header(key))]
    if engine:
        ops.append(secret_file(name="vLLM API key: secret.env (0600 root)" + (" with the previous key (rotation)"
                                                                               if previous else ""),
                               path=SECRET_ENV, content=secret_env(key, previous)))
    return ops


def announced_rotation(key: str, previous: str | None) -> None:
    """Issue 21 item 2: a node whose key changes to one nginx does not send yet answers the
    gateway 401 from its restart until the gateway stage. Its key (the header file's hash, never
    the key) must be the new one or the previous one being retired; else stop before any change."""
    from r1deploy.serving.edge import AUTH_HEADER, auth_header

    if not host.get_fact(File, path=AUTH_HEADER):
        return  # a first key: no engine requires one yet
    accepted = {get_file_sha256(BytesIO(auth_header(k).encode())) for k in (key, previous) if k}
    if host.get_fact(Sha256File, path=AUTH_HEADER) not in accepted:
        from pyinfra.api import DeployError

        raise DeployError(f"{host.name}: the nodes' vLLM key changes (vllm_api_key_*), and the node's current key "
                          "is not vllm_api_key_previous_*: restarted nodes would refuse what nginx sends until the "
                          "gateway stage. Set vllm_api_key_previous_file (or _env) to the key being retired and "
                          "converge (nodes accept both, nginx moves once all do); then remove it and converge again")


def key_args(spec) -> list[str]:
    """The agent reads the nodes' key from the root-only header file: a path in argv, not the key."""
    from r1deploy.serving.edge import AUTH_HEADER

    return ["--api-key-file", AUTH_HEADER] if spec.vllm.api_key_env or spec.vllm.api_key_file else []
