"""The pairs stage's library: (sound chosen, hard negative) pairs and their weights."""
