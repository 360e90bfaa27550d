"""Twins learned from the plant: register maps from traffic captures or live PLCs
(``modbus``), OPC UA address spaces from live servers (``opcua``). Read-only, explicit."""
