"""restoredrill: prove that backups restore into working systems within their RTO."""

__version__ = "0.1.0"
