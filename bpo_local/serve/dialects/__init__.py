"""One module per API that bpo-local serves: each reads its requests as a conversation and renders
answers, streams and errors in its own shape (see ``base.Dialect``).

    OPENAI_CHAT, OPENAI_TEXT    /v1/chat/completions, /v1/completions
    RESPONSES                   /v1/responses (OpenAI's Responses API)
    ANTHROPIC                   /v1/messages (Anthropic's Messages API)
    OLLAMA_CHAT, OLLAMA_GENERATE /api/chat, /api/generate (Ollama's native API)
"""

from __future__ import annotations

from .anthropic import Anthropic
from .base import Conversation, Dialect, Rendering
from .ollama import Ollama
from .openai_chat import OpenAIChat, OpenAIText
from .responses import Responses

OPENAI_CHAT = OpenAIChat()
OPENAI_TEXT = OpenAIText()
RESPONSES = Responses()
ANTHROPIC = Anthropic()
OLLAMA_CHAT = Ollama("chat")
OLLAMA_GENERATE = Ollama("generate")

_BY_PREFIX = (("/api/", OLLAMA_CHAT), ("/v1/messages", ANTHROPIC), ("/v1/responses", RESPONSES))


def for_path(path: str) -> Dialect:
    """The dialect whose error shape a request to ``path`` expects (OpenAI's where no other API owns it)."""
    return next((dialect for prefix, dialect in _BY_PREFIX if path.startswith(prefix)), OPENAI_CHAT)


__all__ = ["ANTHROPIC", "OLLAMA_CHAT", "OLLAMA_GENERATE", "OPENAI_CHAT", "OPENAI_TEXT", "RESPONSES", "Conversation",
           "Dialect", "Rendering", "for_path"]
