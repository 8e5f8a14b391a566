import mmdat  # noqa: F401  (registers mmdat's models and applies the compatibility fixes)
