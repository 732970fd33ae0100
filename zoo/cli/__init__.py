"""The ``zoo`` command line: parse options, call the library, print.

Internal to zoo: plugin authors use the names in ``zoo.__all__``.
"""
