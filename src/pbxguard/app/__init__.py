"""The guard: feeds events to the core and carries out its effects through ports."""
