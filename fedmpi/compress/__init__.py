"""Compressors of what workers send: the contract (fedmpi.compress.base) and one module each.

A new compressor is one module that registers itself with
`@COMPRESSORS.register(name, Params)` plus its import here; the order below
is the order users see. fedmpi.compress.ratedistortion holds the
rate-distortion limit that compressed rounds are measured against.
"""

from fedmpi.compress.base import COMPRESSORS, Compressor, build_compressor
# Each module registers itself in COMPRESSORS.
from fedmpi.compress import identity, fp16, qsgd, topk, randk, sign, majority  # noqa: F401,I001

__all__ = ["COMPRESSORS", "Compressor", "build_compressor"]
