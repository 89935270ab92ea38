import json

from pyinfra.api import FactBase


class PublishedModel(FactBase):
    """What the host serves from `<root>/<org>--<name>/current`, per the agent's manifest check.

    Returns {} before the agent exists (first converge), else the agent's status JSON:
    {"commit": <sha or null>, "verified": bool, ...}.
    """

    def command(self, agent_python, agent_src, root, repo_id):
        return (f"if [ -f {agent_src}/r1deploy/weights/__main__.py ]; then PYTHONDONTWRITEBYTECODE=1 PYTHONPATH={agent_src} {agent_python} -m r1deploy.weights "
                f"status --root {root} --repo {repo_id}; else echo '{{}}'; fi")

    def process(self, output):
        return json.loads("\n".join(output) or "{}")
