"""Verification: running an exported file against PyTorch, comparing, judging variants, re-verifying a file.

Internal to zoo: plugin authors use the names in ``zoo.__all__``.
"""
