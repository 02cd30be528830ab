"""Compressors of what workers send: the contract (fedmpi.compress.base) and one module each.

A new compressor is one module that registers itself with
`@COMPRESSORS.register(name, Params)` plus its import here.
"""

from fedmpi.compress.base import COMPRESSORS, Compressor, build_compressor
from fedmpi.compress import identity  # noqa: F401  (registers "none")

__all__ = ["COMPRESSORS", "Compressor", "build_compressor"]
