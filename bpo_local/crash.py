"""A native crash (inside llama.cpp) ends as one line and an exit code, not a bare "Segmentation fault".

``supervise`` forks once: the child runs the command, the parent (the process the shell waits for) only
waits. When the child dies of SIGSEGV, SIGABRT, SIGBUS, SIGILL or SIGFPE the parent prints one line and
exits ``EXIT_CRASH``; any other exit is passed on as it came. Why a parent and not a handler inside the
crashing process: that handler would run Python (a ctypes callback) on a heap and a GIL left in any
state, and can deadlock; ``faulthandler`` is safe but dumps a traceback and re-raises the signal, so the
shell still says "Segmentation fault" (exit 139). A parent calls nothing but ``sigwaitinfo`` and
``waitpid``; it costs one fork of a small process (a millisecond or two) and nothing while it waits.

Signals sent to the parent by a process (``kill``) are forwarded to the child; those the terminal
sends (Ctrl-C, hang-up) already reach the child, which shares the parent's process group. The child
dies with the parent (PR_SET_PDEATHSIG), so ``kill -9`` of the command stops the work too.
"""

from __future__ import annotations

import os
import signal
import sys

CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE})
EXIT_CRASH = 70
"""EX_SOFTWARE of sysexits.h: an internal error, here a crash in native code."""
_FORWARDED = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})


def quiet_native_aborts() -> None:
    """Keep ggml's abort handler from attaching gdb and printing a backtrace (read when llama.cpp loads)."""
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")


def supervise(advice: str) -> None:
    """Return in a child that runs the command; the parent never returns. No-op where fork or
    ``sigwaitinfo`` is missing (Windows, macOS): the command then runs unsupervised."""
    if not hasattr(os, "fork") or not hasattr(signal, "sigwaitinfo"):
        return
    watched = _FORWARDED | {signal.SIGCHLD}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)  # from before the fork: no signal is lost
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        _die_with_parent(parent)
        return
    status = _wait(pid, watched)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) in CRASH_SIGNALS:
        name = signal.Signals(os.WTERMSIG(status)).name
        sys.stderr.write(f"error: llama.cpp crashed ({name}); {advice}\n")
        sys.stderr.flush()
        os._exit(EXIT_CRASH)
    if os.WIFSIGNALED(status):  # die of the same signal, as the shell and callers expect
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status))


def _wait(pid: int, watched: frozenset[int]) -> int:
    """The child's wait status, forwarding what a process (not the terminal) sent us meanwhile."""
    while True:
        info = signal.sigwaitinfo(watched)
        if info.si_signo == signal.SIGCHLD:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
        elif info.si_code <= 0:  # SI_USER, SI_QUEUE, SI_TKILL: kill() and friends; the tty sends SI_KERNEL
            os.kill(pid, info.si_signo)


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
