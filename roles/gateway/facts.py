"""What the gateway host says about its edge."""

from pyinfra.api import FactBase

from r1deploy.serving.edge import LOADED_MARK, edge_digests_sh


class EdgeLoaded(FactBase):
    """Whether nginx runs the edge files on disk: "loaded" (their digests equal those recorded
    after the last successful reload), "stale" (they changed since: a reload failed or never ran)
    or "unknown" (no reload was ever recorded)."""

    def command(self):
        return (f"if [ ! -e {LOADED_MARK} ]; then echo unknown; "
                f"elif {{ {edge_digests_sh()}; }} | cmp -s - {LOADED_MARK}; then echo loaded; else echo stale; fi")

    def process(self, output):
        said = "\n".join(output).strip()
        return said if said in ("loaded", "stale", "unknown") else "unknown"
