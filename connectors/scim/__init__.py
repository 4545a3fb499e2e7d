"""The SCIM 2.0 target (Split's profile). Only :class:`ScimTarget` is public; the codec is not."""

from .target import ScimTarget

__all__ = ["ScimTarget"]
