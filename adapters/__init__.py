"""Partner adapters, one module each, discovered through the entry-point group tongban.adapters."""
