"""What the operator fixed (``Settings``) and what every route reads (``State``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.requests import Request

from .owner import EngineOwner
from .proxy import Upstream
from .settings import Settings
from .turns import Rewriter


@dataclass
class State:
    """What every route reads: the settings, the engine's owner, the upstream with the proxy's turn rules (if
    any), and ``closing``, set when the server's grace for the requests in flight is over."""

    settings: Settings
    owner: EngineOwner
    upstream: Upstream | None
    rewriter: Rewriter | None = None
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)

    def close(self) -> None:
        """From any thread: every request still waiting is answered as cut short, and BPO's generations stop."""
        self.loop.call_soon_threadsafe(self.closing.set)
        self.owner.stop(timeout=0)


def state_of(request: Request) -> State:
    """The app's state, as the lifespan made it."""
    return request.app.state.bpo  # type: ignore[no-any-return]
