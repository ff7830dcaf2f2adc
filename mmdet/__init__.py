"""Compact, compile-free re-implementation of the mmdetection 2.28 parts used by QDrop-Det."""

__version__ = "2.28.2"
