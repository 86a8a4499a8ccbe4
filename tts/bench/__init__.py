"""`tts bench`: strategies on a dataset at several budgets; accuracy against compute."""

from tts.bench.report import format_table, plot, summarize
from tts.bench.run import BenchConfig, run_bench

__all__ = ["BenchConfig", "format_table", "plot", "run_bench", "summarize"]
