"""The verify stage's library: verdicts for sampled solutions (verifier/ does the scoring)."""
