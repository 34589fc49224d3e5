"""`bpo-local serve`: BPO behind an OpenAI-compatible HTTP API, or as a proxy in front of one."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys

from ..errors import BpoLocalError, UsageError
from ..presets import MODES
from ..serve.settings import Settings
from ..serve.show import SKIP_PREFIX
from .common import add_model_options, load_optimizer, positive_int, seconds

API_KEY_ENV = "BPO_LOCAL_API_KEY"
UPSTREAM_KEY_ENV = "BPO_LOCAL_UPSTREAM_KEY"
DEFAULTS = Settings()
GRACE_SECONDS = DEFAULTS.grace

EPILOG = f"""\
routes:
  GET  /health               no key needed
  GET  /v1/models            BPO's model, or the upstream's models
  POST /v1/optimize          {{"prompt"}} or {{"prompts": [...]}}, mode, n, temperature, top_p, top_k,
                             max_tokens, seed -> what `optimize --json` prints
  POST /v1/chat/completions  OpenAI chat; POST /v1/responses  OpenAI Responses (Codex, the Agents SDK);
  POST /v1/messages          Anthropic Messages (Claude Code): BPO as the model (the last user message is
                             rewritten), or with --upstream: forwarded with the turn rules below, in the
                             same API where the upstream serves it, else as chat completions and back
  POST /v1/completions       BPO as the model for {{"prompt"}} (with --upstream: passed through)
  *    /v1/...               with --upstream: every other route (embeddings, count_tokens, ...) passed on
  POST /api/chat, /api/generate, /api/show, /api/embed; GET /api/tags, /api/ps, /api/version
                             Ollama's native API (NDJSON streams, options mapped), through the
                             upstream with the same turn rules, or BPO answering as an Ollama model

proxy (--upstream URL, a base URL such as http://127.0.0.1:11434/v1):
  X-BPO-Mode: stable|aggressive|pas|mepo|<your preset>|off picks the preset per request (default
  --mode/--preset, else the model's own preset; aggressive generates and forwards one candidate; an
  appending preset such as pas forwards the prompt, its separator and the supplement). The answer
  carries a "bpo" field (preset as "mode", original and optimized prompt, "turn", "reason") and the
  X-BPO-Mode / X-BPO-Status / X-BPO-Turn / X-BPO-Optimized-Prompt headers.
  A user turn is rewritten once: the rewrite store (rewrites.db in the data folder, at most
  --store-size rewrites, least recently used forgotten first; delete the file to clear it) answers a
  retry, a regenerate and the turn carried as history without generating. Only a conversation's first
  user turn is rewritten (BPO is single-turn; --turns all or X-BPO-Turns: all rewrites each new one);
  a request whose last message is not a user turn (a tool result) makes no new rewrite. Earlier user
  turns go upstream as their stored rewrites (--history original keeps them as typed).
  Apps' own requests (Open WebUI's titles, tags and follow-ups, LibreChat's and LobeChat's titles and
  summaries, anything with the header X-OpenWebUI-Task or X-BPO-Task) go upstream exactly as sent
  (turn "app task"; --tasks rewrite treats them as a person's). A person's rewrite goes ahead of BPO's
  other work; one not done in --rewrite-timeout seconds (default {DEFAULTS.rewrite_timeout:g}) is stopped
  and the prompt goes as typed (turn "failed", nothing stored). --show-rewrite (or X-BPO-Show-Rewrite:
  true) begins the answer with a collapsible <details> block holding the rewrite as it is generated;
  the block is taken out of the history before it goes upstream again. A message that begins with
  "{SKIP_PREFIX} " goes as typed, without the prefix (turn "skipped").
  The upstream key is --upstream-key (or ${UPSTREAM_KEY_ENV}); without it the client's own key is
  passed on (as Bearer, or as x-api-key to an Anthropic Messages upstream), unless --api-key is set.

safety:
  Listening beyond loopback needs --api-key (or ${API_KEY_ENV}); then every route but /health wants
  "Authorization: Bearer KEY" or "x-api-key: KEY". A full queue answers 429 with Retry-After. SIGTERM
  (or Ctrl-C) lets in-flight requests finish for --grace seconds (default {GRACE_SECONDS:g}), then cancels
  BPO's generations still running (their clients get what was produced, marked cancelled), answers
  every request still waiting with a 503 in its API's shape, and exits 0.

examples:
  bpo-local serve --port 8000
  bpo-local serve --upstream http://127.0.0.1:11434/v1 --mode aggressive --show-rewrite
  bpo-local serve --upstream http://127.0.0.1:11434/v1 --turns all --store-size 50000
  BPO_LOCAL_API_KEY=secret bpo-local serve --host 0.0.0.0 --upstream https://api.openai.com/v1
  ANTHROPIC_BASE_URL=http://127.0.0.1:8000 claude        # Claude Code through BPO (--upstream an Anthropic API)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve BPO over an OpenAI-compatible HTTP API, or proxy an upstream LLM",
        description="Serve BPO as an OpenAI-compatible model, or put it in front of any OpenAI-compatible server.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    net = parser.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    net.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 picks a free one)")
    net.add_argument("--api-key", default=os.environ.get(API_KEY_ENV), help=f"key clients must send (or ${API_KEY_ENV})")
    net.add_argument("--queue", type=positive_int, default=DEFAULTS.queue_size, metavar="N",
                     help=f"requests that may wait for the engine before 429 (default {DEFAULTS.queue_size})")
    net.add_argument("--max-body", type=positive_int, default=DEFAULTS.max_body_bytes, metavar="BYTES",
                     help=f"largest request body (default {DEFAULTS.max_body_bytes >> 20} MiB)")
    net.add_argument("--grace", type=seconds, default=GRACE_SECONDS, metavar="SECONDS",
                     help=f"on SIGTERM, how long requests in flight may take to finish (default {GRACE_SECONDS:g})")
    net.add_argument("--no-log", action="store_true", help="do not record the rewrites in the run log")
    bpo = parser.add_argument_group("BPO")
    bpo.add_argument("--mode", choices=MODES, help="default preset, BPO's modes (requests may choose their own; "
                     "default: the model's own preset, else stable)")
    bpo.add_argument("--preset", dest="mode", metavar="NAME",
                     help="default preset: stable, aggressive, pas, mepo, or a TOML file's name in the config "
                          "folder's presets/ (requests may choose their own)")
    bpo.add_argument("--seed", type=int, help="BPO's seed where a request gives none, e.g. the proxy's rewrites "
                     "(default: random)")
    bpo.add_argument("--parallel", type=positive_int, default=DEFAULTS.parallel, metavar="K",
                     help=f"optimizations decoded together (default {DEFAULTS.parallel})")
    bpo.add_argument("--max-tokens", type=positive_int, default=DEFAULTS.max_tokens, metavar="N",
                     help=f"most new tokens a request may ask BPO for (default {DEFAULTS.max_tokens}, the presets')")
    bpo.add_argument("--max-n", type=positive_int, default=DEFAULTS.max_n, metavar="N",
                     help=f"most candidates a request may ask BPO for (default {DEFAULTS.max_n}; aggressive mode takes 5)")
    bpo.add_argument("--max-prompts", type=positive_int, default=DEFAULTS.max_prompts, metavar="N",
                     help=f"most prompts in one /v1/optimize request (default {DEFAULTS.max_prompts})")
    up = parser.add_argument_group("proxy")
    up.add_argument("--upstream", metavar="URL", help="OpenAI-compatible base URL to forward chat requests to")
    up.add_argument("--upstream-key", default=os.environ.get(UPSTREAM_KEY_ENV),
                    help=f"key for the upstream (or ${UPSTREAM_KEY_ENV})")
    up.add_argument("--upstream-timeout", type=seconds, default=DEFAULTS.upstream_timeout, metavar="SECONDS",
                    help=f"how long an upstream call may take (default {DEFAULTS.upstream_timeout:g})")
    up.add_argument("--turns", choices=("first", "all"), default=DEFAULTS.turns,
                    help="which user turns are rewritten: a conversation's first only (default), or each new one")
    up.add_argument("--history", choices=("rewritten", "original"), default=DEFAULTS.history,
                    help="earlier user turns go upstream as their stored rewrites (default) or as typed")
    up.add_argument("--rewrite-timeout", type=_limit, default=DEFAULTS.rewrite_timeout, metavar="SECONDS",
                    help=f"a rewrite not done in this time is stopped and the prompt goes as typed (default "
                         f"{DEFAULTS.rewrite_timeout:g}; 0: no limit)")
    up.add_argument("--tasks", choices=("pass", "rewrite"), default=DEFAULTS.tasks,
                    help="apps' own requests (titles, tags, follow-up suggestions): pass them untouched "
                         "(default) or rewrite them as a person's")
    up.add_argument("--show-rewrite", action="store_true",
                    help="begin each rewritten answer with a collapsible block showing the rewrite")
    up.add_argument("--store-size", type=positive_int, default=DEFAULTS.store_size, metavar="N",
                    help=f"most rewrites the rewrite store keeps (default {DEFAULTS.store_size})")
    add_model_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..serve.app import create_app
    from ..serve.server import serve
    from ..serve.store import RewriteStore

    if not _is_loopback(args.host) and not args.api_key:
        raise UsageError(f"listening on {args.host} exposes BPO beyond this machine: set --api-key or ${API_KEY_ENV}")
    if args.upstream and not args.upstream.startswith(("http://", "https://")):
        raise UsageError(f"--upstream {args.upstream!r} is not an http(s) URL; give a base URL such as "
                         "http://127.0.0.1:11434/v1")
    if args.upstream:  # a store that cannot be opened is one line now, not a failed startup later
        RewriteStore.open(capacity=args.store_size).close()
    sock = _listen(args.host, args.port)
    with load_optimizer(args) as optimizer:
        mode = optimizer.preset(args.mode).name  # an unknown or broken preset fails now, listing the known ones
        app = create_app(optimizer, _settings(args, mode))
        host, port = sock.getsockname()[:2]
        where = f"[{host}]" if ":" in host else host
        print(f"serving {optimizer.info.name} ({mode}) on http://{where}:{port}"
              + (f", proxying {args.upstream}" if args.upstream else ""), file=sys.stderr, flush=True)
        if not serve(app, sock, grace=args.grace, debug=args.debug):
            raise BpoLocalError("the server did not start (see the messages above)")
    return 0


def _settings(args: argparse.Namespace, mode: str) -> Settings:
    return Settings(mode=mode, seed=args.seed, parallel=args.parallel, queue_size=args.queue,
                    max_tokens=args.max_tokens, max_body_bytes=args.max_body, api_key=args.api_key,
                    upstream=args.upstream, upstream_key=args.upstream_key, upstream_timeout=args.upstream_timeout,
                    log=not args.no_log, turns=args.turns, history=args.history, store_size=args.store_size,
                    max_n=args.max_n, max_prompts=args.max_prompts, grace=args.grace,
                    rewrite_timeout=args.rewrite_timeout or None, tasks=args.tasks, show_rewrite=args.show_rewrite)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, so a port in use is one line and the real port is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said out loud: asyncio sets TCP_NODELAY only on sockets that say it, and without it
    # Nagle holds each response's body behind its headers until the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise BpoLocalError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another with --port") from None
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _limit(text: str) -> float:
    """Seconds > 0, or 0 for no limit."""
    return 0.0 if text.strip() in ("0", "0.0") else seconds(text)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return int(text)
