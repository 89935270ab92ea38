"""r1deploy: the functional core, no SSH. At the top: the spec (spec.py, spec_strings.py), the CLI
(cli.py) and the host agent's path guard (guard.py); the rooms: planner/, serving/, fleet/, drift/,
gpu/, observe/, and the host agent's weights/ and mirror/."""

__version__ = "0.1.0"

# What the host agent (weights pulls, smoke checks) needs on a host, pinned: pyinfra's pip
# operation compares exact versions, and hosts install from the same wheelhouse/index.
AGENT_REQUIREMENTS = ["huggingface-hub==2.4.0", "requests==2.34.2", "pydantic==2.14.4"]


def _checkout_folders() -> None:
    """Run from a checkout by path alone (PYTHONPATH, as the drift timer's ops host does), the
    wheel's r1deploy.roles and r1deploy.deploys are the repository's roles/ and deploy/ (setup.py maps
    them the same way into the wheel; templates and examples are data: r1deploy.paths)."""
    import importlib.abc
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if (Path(__file__).parent / "roles").is_dir() or not (root / "roles" / "__init__.py").is_file():
        return  # installed: they are inside the package
    folders = {f"{__name__}.roles": root / "roles", f"{__name__}.deploys": root / "deploy"}

    class _Folders(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name not in folders:
                return None
            return importlib.util.spec_from_file_location(
                name, folders[name] / "__init__.py", submodule_search_locations=[str(folders[name])])

    sys.meta_path.append(_Folders())


_checkout_folders()
