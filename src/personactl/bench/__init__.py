"""personactl bench: methods compared on one budget."""

from .config import BenchConfig, bench_config
from .entries import ENTRIES, Entry
from .leaderboard import Comparison, MethodRow, OverallRow, combined_score, method_rows, overall_rows, paired_comparisons, verdict_lines
from .report import BENCH_COLUMNS, BenchReport, bench_markdown, write_bench_report
from .run import BenchResult, TraitBench, claim_bench, count_records, run_bench
from .tuning import Choice, choose

__all__ = [
    "BENCH_COLUMNS",
    "ENTRIES",
    "BenchConfig",
    "BenchReport",
    "BenchResult",
    "Choice",
    "Comparison",
    "Entry",
    "MethodRow",
    "OverallRow",
    "TraitBench",
    "bench_config",
    "bench_markdown",
    "choose",
    "claim_bench",
    "combined_score",
    "count_records",
    "method_rows",
    "overall_rows",
    "paired_comparisons",
    "run_bench",
    "verdict_lines",
    "write_bench_report",
]
