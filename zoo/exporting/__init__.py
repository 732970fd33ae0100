"""``zoo export``: the plan, the pipeline (build → check → export → verify → place), and ``--jobs`` workers.

Internal to zoo: plugin authors use the names in ``zoo.__all__``.
"""
