"""Which messages may be acked: a message (token) is held by each piece of work it fed
(a window, a bucket, the message being processed) and becomes ready when the last lets go.
Ready tokens are handed out with the rows they produced, to be acked once those are written."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable


class TokenLedger:
    def __init__(self) -> None:
        self._pending: dict[Hashable, int] = {}
        self._ready: list[Hashable] = []

    def hold(self, token: Hashable) -> None:
        self._pending[token] = self._pending.get(token, 0) + 1

    def release(self, token: Hashable) -> None:
        """Let go of one hold; a forgotten token stays forgotten (never ready)."""
        left = self._pending.get(token, 0) - 1
        if left > 0:
            self._pending[token] = left
        elif token in self._pending:
            del self._pending[token]
            self._ready.append(token)

    def take_ready(self) -> list[Hashable]:
        ready, self._ready = self._ready, []
        return ready

    def forget(self, tokens: Iterable[Hashable]) -> None:
        """Drop tokens whose work moved elsewhere (their owner replays them): never acked here."""
        for tok in list(tokens):
            self._pending.pop(tok, None)

    def forget_where(self, predicate: Callable[[Hashable], bool]) -> None:
        self.forget([t for t in self._pending if predicate(t)])
