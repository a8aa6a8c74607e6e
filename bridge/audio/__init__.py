"""Audio core: numpy only (plus soxr inside ``resample``).

Import rule: numpy, soxr and the standard library; no asyncio, no websockets.
"""
