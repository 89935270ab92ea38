"""Long work that shows itself at pyinfra's normal verbosity.

pyinfra prints a command's output only from -vvv (state.print_output). A ProgressCommand streams
its own lines as they arrive (the weights agent prints bytes, rate and ETA every ~2 s), prefixed
with the host, at any verbosity; after it, one summary line per host says what the stage did.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pyinfra.api import StringCommand


class ProgressCommand(StringCommand):
    def __init__(self, command: str, summary: Callable[[list[str], float], str] | None = None):
        super().__init__(command)
        self.summary = summary

    def execute(self, state, host, connector_arguments):
        connector_arguments.update(self.connector_arguments)
        started = time.monotonic()
        ok, output = host.run_shell_command(self, print_output=True, print_input=state.print_input,
                                            **connector_arguments)
        if self.summary:
            host.log(self.summary(list(output.stdout_lines), time.monotonic() - started))
        return ok, output
