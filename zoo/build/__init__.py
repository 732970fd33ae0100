"""Building a model: its module, shapes and inputs, and the untrusted weights loaded into it.

Internal to zoo: plugin authors use the names in ``zoo.__all__``.
"""
