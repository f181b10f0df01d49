"""`make bench`: the hot-path figures of issue #5, each against a baseline from the same run.

Run `python -m bench --help`. Results go to bench/results/<timestamp>/ (JSON, Markdown, PNG).
"""
