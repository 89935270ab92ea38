from pyinfra.api import FactBase


class SshdEffective(FactBase):
    """`sshd -T`: the settings sshd really uses ({keyword: value}, lowercase); None without sshd."""

    def requires_command(self):
        return "sshd"

    def command(self):
        return "PATH=$PATH:/usr/sbin sshd -T"

    def process(self, output):
        return dict(line.split(None, 1) for line in output if " " in line)
