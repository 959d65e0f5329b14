"""Distillation, Reproduced: the shared library of the book.

Importing the package is cheap on purpose: chapters import only the modules
they use, and provenance hashes exactly those (see :mod:`distillbook.core.provenance`).
"""

__version__ = "0.1.0"
