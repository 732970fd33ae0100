"""``zoo check``: forward, head, loss and backward checks, and the calls into a task's functions.

Internal to zoo: plugin authors use the names in ``zoo.__all__``.
"""
