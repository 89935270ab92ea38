from pyinfra.api import FactBase


class FreeBytes(FactBase):
    """Bytes free on the filesystem that will hold `path` (its nearest existing parent)."""

    def command(self, path):
        return (f"p={path}; while [ ! -e \"$p\" ]; do p=$(dirname \"$p\"); done; "
                "df -B1 --output=avail \"$p\" | tail -n 1")

    def process(self, output):
        return int(output[-1].strip())
