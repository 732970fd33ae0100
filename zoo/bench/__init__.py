"""``zoo bench``: timing PyTorch against the exported file, its records, and the ``--plot`` figure.

Internal to zoo: plugin authors use the names in ``zoo.__all__``.
"""
