"""RoIPooler, as the detection models know it: fastconv.nn.RoIPooler."""

from ..._pooler import RoIPooler

__all__ = ["RoIPooler"]
