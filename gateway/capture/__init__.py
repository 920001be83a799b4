"""Captures: the project's own codec and a reader per recorded format.

Pure: bytes in, records out.
"""
