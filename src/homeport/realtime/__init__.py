"""Realtime: the WebSocket sync protocol, live fan-out, the device inbox, presence."""
