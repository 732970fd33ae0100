"""The contracts plugins register and receive (re-exported by ``zoo``; import them from there)."""
