"""The plugin host: hook specs, the plugin manager, and guarded calls into plugin code.

Internal to zoo: plugin authors use the names in ``zoo.__all__``.
"""
