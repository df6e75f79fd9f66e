"""Fake ``btu.btu_core``."""
