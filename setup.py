"""The wheel's one import namespace: the repository's top-level folders, read as they are, become
sub-packages of r1deploy (roles/ -> r1deploy.roles, deploy/ -> r1deploy.deploys, templates/ ->
r1deploy.templates and inventories/ -> r1deploy.examples as package data), so site-packages holds no generic `roles` or `deploy`.
Metadata lives in pyproject.toml; only the mapping needs code (the roles' sub-packages are found)."""

from setuptools import find_packages, setup

MAPPED = {"r1deploy.roles": "roles", "r1deploy.deploys": "deploy", "r1deploy.templates": "templates",
          "r1deploy.examples": "inventories"}

setup(
    packages=[*find_packages(include=["r1deploy", "r1deploy.*"]), *MAPPED,
              *(f"r1deploy.roles.{p}" for p in find_packages("roles"))],
    package_dir=MAPPED,
    package_data={"r1deploy": ["data/*", "data/**/*"], "r1deploy.templates": ["*.j2"],
                  "r1deploy.examples": ["*.py", "group_data/*.py"]},
)
