"""``bpo-local eval``'s library: does BPO help a given chat model? The paper's pairwise evaluation.

BPO rewrites each prompt of a data set, the target answers the original and the rewrite, and a judge
compares the two answers in both orders (``pipeline``); ``report`` turns the verdicts into win / tie /
loss rates with bootstrap intervals, as JSON and Markdown. Every stage is cached on disk and resumes.
"""

from .datasets import SHIPPED, Dataset, EvalItem, load_dataset
from .judge import parse_verdict
from .pipeline import EvalRun, EvalSettings, Pair, Progress, StageCount, run_eval
from .report import Summary, render_markdown, report_dict, run_settings, summarize

__all__ = ["SHIPPED", "Dataset", "EvalItem", "EvalRun", "EvalSettings", "Pair", "Progress", "StageCount", "Summary",
           "load_dataset", "parse_verdict", "render_markdown", "report_dict", "run_eval", "run_settings", "summarize"]
