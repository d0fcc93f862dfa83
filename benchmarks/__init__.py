"""Benchmarks run by `nox -s bench`: each module beside this file measures something of ours
against a baseline measured in the same run, and the runner writes one results table."""
