"""Faust stream processing: the warehouse sink (and, in later stages, identity and sessions)."""
