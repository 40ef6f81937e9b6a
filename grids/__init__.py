"""Grid geometry helpers (coordinate datums, spatial utilities)."""
