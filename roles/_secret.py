"""An operation for secret files: uploaded only when their hash differs, never shown in --diff or logs."""

import os
from io import BytesIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, operation
from pyinfra.api.util import get_file_sha256
from pyinfra.facts.files import File, Sha256File


@operation()
def secret_file(path: str, content: str, user: str = "root", group: str | None = None, mode: str = "600"):
    """Like files.put, but the content is never diffed or printed; only its hash is compared.

    The upload lands in a root-only (0700) staging directory beside the target and is installed
    with its final owner and mode in one step, so no reader ever sees it with wider permissions.
    """
    data = content.encode()
    group = group or user
    info = host.get_fact(File, path=path)
    remote_sha = host.get_fact(Sha256File, path=path) if info else None
    if remote_sha != get_file_sha256(BytesIO(data)):
        stage_dir = f"{os.path.dirname(path)}/.r1deploy-staging"
        stage = f"{stage_dir}/{os.path.basename(path)}"
        yield f"install -d -m 700 -o root -g root {stage_dir}"
        yield FileUploadCommand(BytesIO(data), stage, remote_temp_filename=f"{stage}.upload")
        yield f"install -m {mode} -o {user} -g {group} {stage} {path} && rm -f {stage}"
    elif info and (info.get("user") != user or str(info.get("mode")) != mode.lstrip("0")):
        yield f"chown {user}:{group} {path} && chmod {mode} {path}"
