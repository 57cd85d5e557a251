"""Grading, accuracy statistics, evaluation sets and the comparison report."""
