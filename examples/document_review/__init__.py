"""Document review: revise -> review until approved, at most five revisions."""
