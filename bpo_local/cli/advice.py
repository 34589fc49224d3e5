"""What the CLI adds to a library error: the flag, variable or setting that changes the outcome, in one table.

The library's messages state facts (``errors.py``); each row here turns one error class into the line
``bpo-local`` prints after ``error:``. Rows are tried in order, so a subclass comes before its base.
"""

from __future__ import annotations

from ..errors import (
    Advice,
    BpoLocalError,
    BuildPresetsUnreadable,
    ContextFull,
    ContextTooBig,
    DecodeFailed,
    InvalidSetting,
    LlamaCppRefused,
    ModelIsFolder,
    NoDiskSpace,
    NoModel,
    NoSuchRevision,
    NotCached,
    PromptTooLong,
    ResumeUnreadable,
    RunLogTooNew,
    RunLogUnusable,
    ServerAuth,
    ServerError,
    TwoBackends,
    Unsupported,
    explain,
)

NATIVE_REASON = "--debug shows llama.cpp's reason"

ADVICE: Advice = (
    (NoModel, lambda e: f"no model: pass --model PATH.gguf, set BPO_LOCAL_MODEL, set `model` in {e.config}, "
                        "or build one with `bpo-local convert`"),
    (ModelIsFolder, lambda e: f"{e}; convert it with `bpo-local convert {e.path}`" if e.checkpoint
                              else f"{e}; point --model at the .gguf file inside"),
    (LlamaCppRefused, lambda e: f"{e}; offload fewer layers with --gpu-layers ({NATIVE_REASON})" if e.device
                                else f"{e} ({NATIVE_REASON})"),
    (ContextTooBig, lambda e: f"{e}; lower it with --ctx or offload fewer layers with --gpu-layers"),
    (PromptTooLong, lambda e: f"{e}; raise it with --ctx" if e.n_ctx_train else str(e)),
    (ContextFull, lambda e: f"{e}; raise it with --ctx"),
    (DecodeFailed, lambda e: f"{e}; retry with --debug for its log"),
    (InvalidSetting, lambda e: f"--{e.name.replace('_', '-')} must be at least {e.minimum} (got {e.value})"),
    (NoDiskSpace, lambda e: f"{e}; free some or " + ("use --outtype f16" if e.outtype == "f32"
                                                     else "use a smaller --outtype or quantization")),
    (NoSuchRevision, lambda e: f"{e}: check --revision"),
    (NotCached, lambda e: f"{e}; offline, download it elsewhere (`huggingface-cli download {e.repo_id} --local-dir "
                          f"{e.folder}`), copy that folder here and run `bpo-local convert ./{e.folder}`, or set "
                          "HF_ENDPOINT to a mirror" + ("" if e.unreachable else ", or unset HF_HUB_OFFLINE")),
    (RunLogTooNew, lambda e: f"{e}; upgrade bpo-local or pass --no-log"),
    (RunLogUnusable, lambda e: f"{e}; move it away or pass --no-log"),
    (ResumeUnreadable, lambda e: f"cannot open {e.path} for --resume: {e.reason}; check the path"),
    (BuildPresetsUnreadable, lambda e: f"{e} or pass --preset"),
    (TwoBackends, lambda e: "--model and --server name two different backends; give one"),
    (Unsupported, lambda e: f"{e}; run BPO on llama.cpp's llama-server or vLLM, or locally with --model"),
    (ServerAuth, lambda e: f"{e}; pass the right --server-key (or BPO_LOCAL_SERVER_KEY)"),
    (ServerError, lambda e: f"{e}; check --server (or BPO_LOCAL_SERVER / `server` in config.toml); "
                            "with --resume, rerun to continue"),
)


def describe(err: BpoLocalError) -> str:
    """The line printed after ``error:`` for ``err``."""
    return explain(ADVICE, err)
