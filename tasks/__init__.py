"""hnsdpo package."""
