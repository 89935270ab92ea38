"""Seeded request streams for `r1deploy bench --capacity`: what R1 users send. Pure.

Prompts are token ids (vLLM's /v1/completions takes a list of ints), so their lengths are exact
without a tokenizer on the machine that sends them.

- ``random``: independent prompts of ``input_len`` random tokens, ``output_len`` out (the shape
  every earlier bench used: 1024 / 256).
- ``multi-turn``: chats that share one system prompt; each turn resends the whole history (the
  system prompt, every earlier user turn and a stand-in answer) plus a new user turn, so a turn's
  prefix is cached where the conversation ran before (prefix caching, prefix-aware routing).
  Turns are interleaved across conversations: turn k of a chat is sent after turn k-1 of every
  other chat, as users who read an answer before they reply.
- ``long-chat``: the same with long histories (8 turns of 256 in / 768 back behind a 1,024-token system
  prompt: 8,448 tokens by the last turn) and so many chats that their prefixes outgrow a small GPU KV
  cache before a chat comes back: the workload KV offload to host RAM is for (bench/results/h200/offload/).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Token ids drawn from here decode to ordinary text in R1's vocabulary (no special tokens).
ID_LOW, ID_HIGH = 1000, 100_000


@dataclass(frozen=True)
class Request:
    prompt: list[int]
    max_tokens: int
    session: str = ""  # conversation id (consistent-hash routing keys on it)
    turn: int = 0
    cached_prefix: int = 0  # tokens of the prompt an earlier request of the stream sent first


@dataclass(frozen=True)
class Workload:
    name: str
    requests: list[Request] = field(default_factory=list)

    @property
    def input_tokens(self) -> int:
        return sum(len(r.prompt) for r in self.requests)

    def take(self, n: int) -> list[Request]:
        """The first n requests, cycling when the stream is shorter."""
        return [self.requests[i % len(self.requests)] for i in range(n)]


def _tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(ID_LOW, ID_HIGH) for _ in range(n)]


def random_workload(n: int, input_len: int = 1024, output_len: int = 256, seed: int = 0) -> Workload:
    rng = random.Random(seed)
    return Workload("random", [Request(_tokens(rng, input_len), output_len) for _ in range(n)])


def multi_turn(conversations: int, turns: int = 4, system_len: int = 512, user_len: int = 128,
               answer_len: int = 256, output_len: int = 256, seed: int = 0) -> Workload:
    """``conversations`` chats of ``turns`` turns each behind one shared system prompt."""
    rng = random.Random(seed)
    system = _tokens(rng, system_len)
    history = [list(system) for _ in range(conversations)]
    out = []
    for turn in range(turns):
        for c in range(conversations):
            before = len(history[c])
            history[c] += _tokens(rng, user_len)
            out.append(Request(list(history[c]), output_len, session=f"chat-{seed}-{c}", turn=turn,
                               cached_prefix=before if turn else system_len if c else 0))
            history[c] += _tokens(rng, answer_len)  # the answer as the client resends it
    return Workload("multi-turn", out)


NAMES = ("random", "multi-turn", "long-chat")


def make(name: str, n: int, seed: int = 0, input_len: int = 1024, output_len: int = 256) -> Workload:
    """By name, at least n requests (multi-turn: n/4 chats of 4 turns; long-chat: n/8 chats of 8)."""
    if name == "random":
        return random_workload(n, input_len, output_len, seed)
    if name == "multi-turn":
        return multi_turn(max(1, -(-n // 4)), output_len=output_len, seed=seed)
    if name == "long-chat":
        return multi_turn(max(1, -(-n // 8)), turns=8, system_len=1024, user_len=256, answer_len=768,
                          output_len=output_len, seed=seed)
    raise ValueError(f"unknown workload {name!r}: {', '.join(NAMES)}")
