"""Reporting scores: the run report, the paper-style table and plot, the published rows."""
