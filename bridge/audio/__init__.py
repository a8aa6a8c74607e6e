"""Audio core: numpy only (plus soxr inside ``resample``).

Import rule: numpy, soxr, the standard library, ``bridge.audio`` itself and ``bridge.units``;
no asyncio, no websockets.
"""
