"""Twins learned from the plant: register maps from traffic captures or live PLCs
(``modbus``), OPC UA address spaces from live servers (``opcua``). Read-only, explicit."""

from restoredrill.errors import InputError


class LearnError(InputError):
    """Nothing could be learned (a device unreachable or not speaking its protocol, a
    secured server, bad options): the message says why and what to do."""


__all__ = ["LearnError"]
