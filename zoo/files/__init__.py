"""Files zoo reads and writes: path checks, the one writer, staging and placing, checksums.

Internal to zoo: plugin authors use the names in ``zoo.__all__``.
"""
