"""A serving group as serving sees it: a plain value (its name, its head, its members ranked head
first), handed to rendering and launching. Which hosts form a group, and whether they agree, is the
fleet's business (``r1deploy.fleet.groups``): nothing here reads an inventory. Pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    host: str
    rank: int  # node rank: 0 is the head
    ip: str | None  # the member's fleet address (vllm_host_ip)

    @property
    def role(self) -> str:
        return "head" if self.rank == 0 else f"worker rank {self.rank}"


@dataclass(frozen=True)
class ServingGroup:
    name: str
    head: str
    members: tuple[Member, ...]  # ordered by rank

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def hosts(self) -> list[str]:
        return [m.host for m in self.members]

    @property
    def head_ip(self) -> str | None:
        return self.members[0].ip

    def member(self, host: str) -> Member:
        return next(m for m in self.members if m.host == host)
