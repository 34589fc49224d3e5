"""``bpo-local eval``'s library: does BPO help a given chat model? The paper's pairwise evaluation.

BPO rewrites each prompt of a data set, the target answers the original and the rewrite, and a judge
compares the two answers in both orders (``pipeline``); ``report`` turns the verdicts into win / tie /
loss rates with bootstrap intervals, as JSON and Markdown. Every stage is cached on disk and resumes.
Several optimizers are each compared with the original prompts and, head to head, with each other
(``run_head_to_head``), in one report (``comparison_dict``).
"""

from .datasets import SHIPPED, Dataset, EvalItem, load_dataset
from .judge import parse_verdict
from .pipeline import EvalRun, EvalSettings, Pair, Progress, StageCount, run_eval, run_head_to_head
from .report import (
    Summary,
    comparison_dict,
    head_to_head_settings,
    render_comparison,
    render_markdown,
    report_dict,
    run_settings,
    summarize,
)

__all__ = ["SHIPPED", "Dataset", "EvalItem", "EvalRun", "EvalSettings", "Pair", "Progress", "StageCount", "Summary",
           "comparison_dict", "head_to_head_settings", "load_dataset", "parse_verdict", "render_comparison",
           "render_markdown", "report_dict", "run_eval", "run_head_to_head", "run_settings", "summarize"]
