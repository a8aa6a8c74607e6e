"""Sans-I/O call protocols: text or bytes in, frozen dataclasses out.

Import rule: no asyncio, no websockets, no sockets; only the standard library,
``bridge.errors`` and ``bridge.units``.
"""
