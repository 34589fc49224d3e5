"""The REPL loop: read a prompt or a command, stream the optimization, log it, repeat."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ..errors import BpoLocalError, UsageError
from ..targets import ChatSettings, ChatStream, user_message
from . import view
from .advice import describe
from .commands import dispatch
from .input import prompt_session, typeahead_waits, unwrap
from .session import Comparison, Session, Settings, Turn

if TYPE_CHECKING:
    from ..optimizer import Optimizer, OptimizeResult
    from ..runlog import RunLog
    from ..targets import ChatTarget

COMPARE_MAX_TOKENS = 512
"""Length cap of /compare answers unless /max sets one."""


@contextmanager
def interrupt_flag(on_interrupt: Callable[[], None] | None = None) -> Iterator[threading.Event]:
    """While active, Ctrl-C sets the returned event instead of raising, so a generation stops cleanly, and
    calls ``on_interrupt`` (a generation's ``cancel``: it stops at once, even while its prompt is evaluated)."""
    flag = threading.Event()

    def interrupted(signum: int, frame: object) -> None:
        flag.set()
        if on_interrupt is not None:
            on_interrupt()

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class Repl:
    """One interactive session on a loaded optimizer. ``run()`` until Ctrl-D or /exit."""

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        console: Console,
        history_file: Path,
        log: RunLog | None,
        load_model: Callable[[str], Optimizer],
        load_target: Callable[[str], ChatTarget],
        target: str | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.console = console
        self.log = log
        self.settings = Settings()
        self.session = Session()
        self.prefill = ""
        """Text the next input line starts with (/use, /edit)."""
        self.running = True
        self._input = prompt_session(history_file)
        self._load_model = load_model
        self._load_target = load_target
        self._target_name = target
        self._target: ChatTarget | None = None
        self._model_sha256: str | None = None

    def run(self) -> None:
        self.show_banner()
        while self.running:
            try:
                text = self._input.prompt(f"{self.settings.mode}> ", default=self.prefill)
            except KeyboardInterrupt:
                if not self._input.default_buffer.text.strip():
                    self.console.print("[dim](to leave, press Ctrl-D or type /exit)[/]")
                self.prefill = ""
                continue
            except EOFError:
                break
            self.prefill = ""
            try:
                self.handle(text)
            except KeyboardInterrupt:  # e.g. while a model loads for /model or /compare
                self.console.print("[yellow]interrupted[/]")

    def handle(self, text: str) -> None:
        """One input: a ``/command``, or a prompt (a triple-quoted block is always a prompt) to optimize.
        Errors are shown and the session goes on."""
        prompt = unwrap(text)
        if not prompt.strip():
            return
        try:
            if text.lstrip().startswith("/"):
                dispatch(self, text)
            else:
                self.optimize(prompt)
        except BpoLocalError as exc:
            self.console.print(Text.assemble(("error: ", "bold red"), describe(exc)))

    # turns

    def optimize(self, prompt: str) -> None:
        """Stream BPO's rewrite(s) of ``prompt`` into panels; Ctrl-C keeps what was produced."""
        s = self.settings
        changes = s.overrides.changes()
        n = self.optimizer.preset(s.mode, **changes).n
        texts = [Text() for _ in range(n)]
        stream = self.optimizer.stream(prompt, mode=s.mode, **changes)
        with self._generating(view.candidates(texts), on_interrupt=stream.cancel) as (live, stop):
            for delta in stream:
                texts[delta.index].append(delta.text)
                if stop.is_set():
                    stream.cancel()
            result = stream.result
            cancelled = [reason == "cancelled" for reason in result.finish_reasons]
            live.update(view.candidates(result.candidates, cancelled=cancelled))
        self.session.turns.append(Turn(result))
        if result.cancelled:
            self.console.print("[yellow]interrupted[/] [dim]- kept what was produced; /retry runs it again[/]")
        self._record(result)

    def _record(self, result: OptimizeResult) -> None:
        if self.log is None:
            return
        if self._model_sha256 is None:
            with self.console.status("hashing the model file for the run log (once per file)"):
                self._model_sha256 = self.optimizer.model_sha256()
        self.log.record(result, self._model_sha256, backend=self.optimizer.info.backend)

    def compare(self, target: str | None) -> None:
        """Answer the last prompt and its optimized version with the target model, side by side."""
        turn = self.session.last
        model = self._target_model(target)
        prompts = (turn.result.prompt, turn.chosen)
        answers = [Text(), Text()]
        max_tokens = self.settings.overrides.max_tokens or COMPARE_MAX_TOKENS
        streams: list[ChatStream] = []

        def cancel_current() -> None:
            if streams:
                streams[-1].cancel()

        with self._generating(view.comparison(model.name, prompts, answers), on_interrupt=cancel_current) as (_, stop):
            for prompt, answer in zip(prompts, answers):
                if stop.is_set():
                    break
                stream = model.chat(user_message(prompt), ChatSettings(max_tokens=max_tokens))
                streams.append(stream)
                for piece in stream:
                    answer.append(piece)
                    if stop.is_set():
                        stream.cancel()
        if stop.is_set():
            self.console.print("[yellow]interrupted[/]")
        turn.comparison = Comparison(model.name, answers[0].plain, answers[1].plain)

    def _target_model(self, name: str | None) -> ChatTarget:
        if name is not None and name != self._target_name:
            self._close_target()
            self._target_name = name
        if self._target_name is None:
            raise UsageError("no target model; start with --target MODEL.gguf or run /compare MODEL.gguf")
        if self._target is None:
            self._target = self._load_target(self._target_name)
        return self._target

    @contextmanager
    def _generating(self, renderable: object,
                    on_interrupt: Callable[[], None] | None = None) -> Iterator[tuple[Live, threading.Event]]:
        """A live view of a generation, the Ctrl-C flag that stops it, and keys typed meanwhile held back."""
        live = Live(renderable, console=self.console, refresh_per_second=10,  # type: ignore[arg-type]
                    vertical_overflow="visible")
        with typeahead_waits(), live, interrupt_flag(on_interrupt) as stop:
            yield live, stop

    # model and display

    def switch_model(self, name: str) -> None:
        """Load another BPO build; the current one stays if that fails."""
        new = self._load_model(name)
        self.optimizer.close()
        self.optimizer = new
        self._model_sha256 = None

    def show_banner(self) -> None:
        self.console.print(view.banner(self.optimizer.info, self.log.path if self.log else None))

    def show_params(self) -> None:
        s = self.settings
        changes = s.overrides.changes()
        preset = self.optimizer.preset(s.mode, **changes)
        values = {"mode": preset.name, "n": preset.n, "temperature": preset.temperature, "top_p": preset.top_p,
                  "top_k": preset.top_k, "max_tokens": preset.max_new_tokens,
                  "seed": "random" if s.overrides.seed is None else s.overrides.seed}
        overridden = ["mode", *changes]
        self.console.print(view.params(values, overridden))

    def close(self) -> None:
        self._close_target()
        self.optimizer.close()

    def _close_target(self) -> None:
        if self._target is not None:
            self._target.close()
            self._target = None
