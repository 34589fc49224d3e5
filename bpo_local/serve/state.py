"""What the operator fixed (``Settings``) and what every route reads (``State``)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from .owner import EngineOwner
from .proxy import Upstream
from .settings import Settings
from .turns import Rewriter


@dataclass
class State:
    """What every route reads: the settings, the engine's owner, and the upstream with the proxy's
    turn rules (if any)."""

    settings: Settings
    owner: EngineOwner
    upstream: Upstream | None
    rewriter: Rewriter | None = None


def state_of(request: Request) -> State:
    """The app's state, as the lifespan made it."""
    return request.app.state.bpo  # type: ignore[no-any-return]
