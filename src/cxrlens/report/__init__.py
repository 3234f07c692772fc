"""The self-contained HTML report of a run (``build_report``)."""

from cxrlens.report.builder import build_report

__all__ = ["build_report"]
