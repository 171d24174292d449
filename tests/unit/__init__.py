"""Fast unit tests: plain objects and fakes, no services."""
