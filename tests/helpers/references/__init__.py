"""Deliberately naive float64 reference implementations, written from the papers (not from mlcl)."""
