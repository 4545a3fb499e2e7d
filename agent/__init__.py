"""scim-agent: sync users and groups from a directory to Split over SCIM 2.0."""

__version__ = "0.1.0"
