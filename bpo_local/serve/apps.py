"""Apps' own requests: the titles, tags, follow-up suggestions, search queries and summaries chat apps ask
the same model for. They are no person's prompt, so the proxy passes them upstream exactly as sent.

One entry per thing an app does, each citing the app's own source it matches. A request is an app task when
a header an entry names is present and not empty, or when the text of its system message or its last user
message begins with an entry's opening (and, where the opening is shared with a person's turn, holds one
of its cues too). Content matching is best effort: an admin may change an app's templates; the headers
(Open WebUI's ``X-OpenWebUI-Task`` mapping, and our own ``X-BPO-Task``) are what to rely on.

Some apps also put text of their own around a person's message, in the same message: Open WebUI's RAG template
with the retrieved files or web pages before it, its code interpreter's prompt after it. BPO rewrites the person's
part alone and the app's text goes as it came.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from .turns import APP_ROLE, Turn

TASK_HEADER = "x-bpo-task"
"""Our own header: any app (or script) that sets it to a non-empty value marks its request as its own task."""


@dataclass(frozen=True)
class AppTask:
    """What marks one app's task: a header, or the ``opening`` of a message's text (``role`` system, or user for
    the last user message; found ``where`` it opens the text, anywhere in it, or as the whole text), with
    ``cues`` of which the text must hold one, where given."""

    app: str
    task: str
    source: str
    header: str | None = None
    opening: str | None = None
    role: str = "user"
    cues: tuple[str, ...] = ()
    where: Literal["start", "anywhere", "whole"] = "start"

    def matches(self, headers: Mapping[str, str], texts: Mapping[str, str]) -> bool:
        if self.header is not None:
            return bool(headers.get(self.header, "").strip())
        text = texts.get(self.role, "")
        if self.opening is None:
            return False
        found = {"start": text.startswith, "anywhere": text.__contains__, "whole": text.__eq__}[self.where]
        return found(self.opening) and (not self.cues or any(cue in text for cue in self.cues))

    def describe(self, headers: Mapping[str, str]) -> str:
        if self.header is not None:
            return f"{self.app}: {self.task} (header {self.header}: {headers.get(self.header, '').strip()})"
        return f"{self.app}: {self.task}"


_OWUI = "open-webui 0.12.4, backend/open_webui/config.py"
_OWUI_TASK = "### Task:\n"
_OWUI_CUES = ("<chat_history>", "#### Output:")
"""Open WebUI's templates open with ``### Task:`` and quote the chat; so does its RAG template, which it puts
before a person's own message, but that one quotes no chat history."""
_LCA = "@librechat/agents 3.9.2"
_LOBE = "lobehub/lobe-chat packages/prompts/src/chains"
_CC = "@anthropic-ai/claude-code"
_CODEX = "openai/codex codex-rs 0.171"

APP_TASKS: tuple[AppTask, ...] = (
    AppTask("any app", "a task marked by the app", "bpo-local", header=TASK_HEADER),
    AppTask("Open WebUI", "background task", "open-webui utils/headers.py {{TASK}}; docs: connection headers",
            header="x-openwebui-task"),
    AppTask("Open WebUI", "title, tags, follow-ups, queries, autocomplete or image prompt", _OWUI,
            opening=_OWUI_TASK, cues=_OWUI_CUES),
    AppTask("Open WebUI", "context compaction", "open-webui utils/context_compaction.py",
            opening=_OWUI_TASK + "Summarize the conversation history that will be compacted out"),
    AppTask("Open WebUI", "emoji", _OWUI + " DEFAULT_EMOJI_GENERATION_PROMPT_TEMPLATE",
            opening="Your task is to reflect the speaker's likely facial expression through a fitting emoji."),
    AppTask("Open WebUI", "mixture of agents", _OWUI + " DEFAULT_MOA_GENERATION_PROMPT_TEMPLATE",
            opening="You have been provided with a set of responses from various models to the latest user "
                    "query"),
    AppTask("Open WebUI", "tool choice", _OWUI + " DEFAULT_TOOLS_FUNCTION_CALLING_PROMPT_TEMPLATE",
            opening="Available Tools: ", role="system",
            cues=("Your task is to choose and return the correct tool(s)",)),
    AppTask("LibreChat", "title", _LCA + " src/utils/title.ts defaultCompletionPrompt",
            opening="Provide a concise, 5-word-or-less title for the conversation"),
    AppTask("LibreChat", "title", _LCA + " src/utils/title.ts defaultTitlePrompt",
            opening="Analyze this conversation and provide:\n1. The detected language of the conversation"),
    AppTask("LibreChat", "title", "LibreChat api/app/clients/prompts/titlePrompts.js createTitlePrompt",
            opening="Write a concise title for this conversation in the given language.", role="system"),
    AppTask("LibreChat", "summary", _LCA + " src/summarization/shared.ts DEFAULT_SUMMARIZATION_PROMPT",
            opening="Hold on, before you continue I need you to write me a checkpoint of everything so far."),
    AppTask("LibreChat", "summary", _LCA + " src/summarization/shared.ts DEFAULT_UPDATE_SUMMARIZATION_PROMPT",
            opening="Hold on again, update your checkpoint."),
    AppTask("LibreChat", "activity label", _LCA + " src/prompts/activityLabel.ts",
            opening="Write a short label describing what this block of agent activity accomplished.",
            role="system"),
    AppTask("LibreChat", "activity label", _LCA + " src/prompts/activityLabel.ts ACTIVITY_PHASE_LABEL_PROMPT",
            opening="Summarize what this phase of an agent run accomplished.", role="system"),
    AppTask("LibreChat", "reasoning label", _LCA + " src/prompts/reasoningLabel.ts",
            opening="Write a short orientation title for a user-visible reasoning step", role="system"),
    AppTask("LobeChat", "title", _LOBE + "/summaryTitle.ts",
            opening="You are a professional conversation summarizer. Generate a concise title", role="system"),
    AppTask("LobeChat", "tags", _LOBE + "/summaryTags.ts", opening="你是一名擅长会话标签总结的助理", role="system"),
    AppTask("LobeChat", "translation", _LOBE + "/translate.ts",
            opening="You are a professional translator. Translate the input text to", role="system"),
    AppTask("LobeChat", "query rewrite", _LOBE + "/rewriteQuery.ts",
            opening="Given the following conversation and a follow-up question, rephrase the follow up question",
            role="system"),
    AppTask("LobeChat", "history summary", _LOBE + "/summaryHistory.ts",
            opening="You're an assistant who's good at extracting key takeaways from conversations", role="system"),
    AppTask("LobeChat", "topic summary", _LOBE + "/topicAutoSummary.ts",
            opening="Summarize the conversation for future reference.", role="system"),
    AppTask("LobeChat", "follow-up suggestions", _LOBE + "/followUpAction.ts",
            opening="You are a sidecar that extracts 0-4 quick-reply suggestions", role="system"),
    AppTask("LobeChat", "emoji", _LOBE + "/pickEmoji.ts",
            opening="You are an emoji expert who selects the most appropriate emoji", role="system"),
    AppTask("LobeChat", "language", _LOBE + "/langDetect.ts", opening="你是一名精通全世界语言的语言专家",
            role="system"),
    AppTask("Claude Code", "session title", _CC + " 2.1.112",
            opening="Generate a concise, sentence-case title (3-7 words) that captures the main topic or goal of "
                    "this coding session.", role="system", where="anywhere"),
    AppTask("Claude Code", "session title", _CC + " 2.1.337",
            opening="You are naming a coding session so the user can pick it out of a long list of sessions.",
            role="system", where="anywhere"),
    AppTask("Claude Code", "topic detection", _CC + " 2.0.54",
            opening="Analyze if this message indicates a new conversation topic.", role="system", where="anywhere"),
    AppTask("Claude Code", "bash command prefix", _CC + " 2.1.112",
            opening="Your task is to process Bash commands that an AI coding agent wants to run.", role="system",
            where="anywhere"),
    AppTask("Claude Code", "bash command prefix", _CC + " 2.1.112",
            opening="<policy_spec>\n# Claude Code Code Bash command prefix detection"),
    AppTask("Claude Code", "tool-use label", _CC + " 2.1.112",
            opening="Write a short summary label describing what these tool calls accomplished.", role="system",
            where="anywhere"),
    AppTask("Claude Code", "quota check", _CC + " 2.1.112 (max_tokens 1)", opening="quota", where="whole"),
    AppTask("Claude Code", "compaction", _CC + " 2.1.112", opening="CRITICAL: Respond with TEXT ONLY. Do NOT call "
                                                                    "any tools."),
    AppTask("Claude Code", "away recap", _CC + " 2.1.112",
            opening="The user stepped away and is coming back. Recap in under 40 words"),
    AppTask("Claude Code, Codex", "next-prompt suggestion", _CC + " 2.1.112; " + _CODEX,
            opening="[SUGGESTION MODE: Suggest what the user might naturally type next into "),
    AppTask("Codex", "compaction", _CODEX + " templates/compact/prompt.md SUMMARIZATION_PROMPT",
            opening="You are performing a CONTEXT CHECKPOINT COMPACTION."),
)


def recognise(headers: Mapping[str, str], turns: Sequence[Turn]) -> str | None:
    """What app task a request is, in words (the app, the task, what matched); None for a person's turn."""
    texts: dict[str, str] = {}
    for turn in turns:
        if turn.role == "system" and turn.text and "system" not in texts:
            texts["system"] = turn.text
    users = [t.text for t in turns if t.role == "user" and t.text is not None]
    if users:
        texts["user"] = users[-1]
    found = next((entry for entry in APP_TASKS if entry.matches(headers, texts)), None)
    return found.describe(headers) if found else None


@dataclass(frozen=True)
class AppText:
    """An app's own text in a user message beside the person's: ``block``s of it, with only whitespace between,
    at the message's start (``place`` before) or at its end (after). Found in time linear in the message: blocks
    are matched where they stand, never searched for from the end."""

    app: str
    what: str
    source: str
    block: re.Pattern[str]
    place: Literal["before", "after"]

    def split(self, text: str) -> tuple[str, str, str] | None:
        """``(the app's text before, the person's, the app's text after)``, or None where ``text`` has none of it."""
        if self.place == "before":
            end = 0
            while found := self.block.match(text, _after_space(text, end)):
                end = found.end()
            if not end:
                return None
            cut = _after_space(text, end)
            return text[:cut], text[cut:], ""
        cut = len(text.rstrip())
        for found in reversed(list(self.block.finditer(text))):
            if text[found.end():cut].strip():
                break
            cut = found.start()
        if cut == len(text.rstrip()):
            return None
        cut = len(text[:cut].rstrip())
        return "", text[:cut], text[cut:]


def _after_space(text: str, at: int) -> int:
    """Where the whitespace at ``at`` in ``text`` ends."""
    return _SPACE.match(text, at).end()  # type: ignore[union-attr]  # it matches the empty string too


_SPACE = re.compile(r"\s*")
_AGENT_BLOCK = re.compile(
    r"<(system-reminder|environment_context|user_instructions|recommended_plugins|skill|user_shell_command|"
    r"turn_aborted|subagent_notification|local-command-caveat|local-command-stdout|local-command-stderr|bash-input|"
    r"bash-stdout|bash-stderr|command-name|command-message|command-args)(?:\s[^>]*)?>(?:(?!</?\1[\s>/]).)*</\1>"
    r"|# AGENTS\.md instructions(?:(?!# AGENTS\.md instructions|</INSTRUCTIONS>).)*</INSTRUCTIONS>", re.S | re.I)
"""One block of a coding agent's own text in a user message: Claude Code's reminders (its context, files opened,
todo lists) and local-command echoes; Codex's AGENTS.md instructions, environment and other context fragments
(codex-rs ContextualUserFragment: a start and an end marker, matched as Codex matches them, ignoring case). A
block never runs past a tag of its own name, so text between two blocks is never taken for one."""

APP_TEXTS: tuple[AppText, ...] = (
    AppText("Claude Code, Codex", "context blocks before the person's message",
            _CC + " 2.1.112 (its context reminder, then the person's text, then attachments' reminders, merged as "
            "text blocks of one user message); " + _CODEX + " core/src/context/contextual_user_message.rs",
            _AGENT_BLOCK, "before"),
    AppText("Claude Code", "reminders after the person's message", _CC + " 2.1.112", _AGENT_BLOCK, "after"),
    AppText("Open WebUI", "RAG template with the retrieved sources",
            _OWUI + " DEFAULT_RAG_TEMPLATE; utils/middleware.py apply_source_context_to_messages, "
            "utils/misc.py update_message_content (template, newline, message)",
            re.compile(r"### Task:\nRespond to the user query using the provided context.*\n</context>\n\n", re.S),
            "before"),
    AppText("Open WebUI", "code interpreter prompt (legacy function calling)",
            _OWUI + " DEFAULT_CODE_INTERPRETER_PROMPT; utils/middleware.py process_chat_payload (message, newline, "
            "prompt)", re.compile(r"\n\n#### Code Interpreter\n\nYou have access to a Python code interpreter.*", re.S),
            "after"),
)
"""Searched in this order, each on what the ones before left of the message."""

def persons_turns(turns: Sequence[Turn]) -> tuple[tuple[Turn, ...], dict[int, tuple[str, str]]]:
    """``turns`` with each user turn holding the person's message alone (an ``APP_ROLE`` turn where an app's text
    is all there is, a turn without text where the rest is an image or a file), and the apps' texts before and
    after it by the turn's index, to put around whatever goes upstream in its place."""
    around: dict[int, tuple[str, str]] = {}
    persons = list(turns)
    for index, turn in enumerate(turns):
        if turn.role != "user" or turn.text is None:
            continue
        before, person, after = "", turn.text, ""
        for app_text in APP_TEXTS:
            if (split := app_text.split(person)) is not None:
                before, person, after = before + split[0], split[1], split[2] + after
        if before or after:
            around[index] = (before, after)
            if person.strip():
                persons[index] = replace(turn, text=person)
            else:  # the app's text alone, or beside an image the person sent without words
                persons[index] = replace(turn, text=None) if turn.media else Turn(APP_ROLE)
    return tuple(persons), around
