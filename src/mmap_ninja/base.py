"""Where mmap_ninja 0.9.0 kept ``Wrapped``; kept so that its imports keep working."""

from .wrapped import Wrapped

__all__ = ["Wrapped"]
