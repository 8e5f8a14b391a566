class ExportError(RuntimeError):
    """A model (part) that cannot be exported; the message names the part and why."""
