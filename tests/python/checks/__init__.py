"""Checks of a running `minerva serve` with the official clients (`openai`, `anthropic`, `ollama`)
and raw HTTP, one module per suite; `common.py` holds what several suites share.
tests/python/run_checks.py runs one suite.
"""
