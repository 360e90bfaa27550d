"""Backup sources, one module each, registered by the ``kind:`` the inventory uses."""
