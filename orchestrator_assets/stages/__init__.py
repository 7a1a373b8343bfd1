"""The stages of one target, free of Dagster: make the change, verify it, deliver the PR.

Each takes plain values and returns a record; the Dagster layer (`assets/`) only wires them and
stores the records. `target.advance_target` takes one target through all of them.
"""
