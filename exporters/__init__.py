"""Built-in export formats, registered through the same hook third-party exporters use."""
