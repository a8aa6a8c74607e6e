"""The one websocket connection layer: every socket bridge speaks is built on it.

``connection`` (the shared framing, flush, backpressure and close procedure), ``server`` and
``client`` (the two sides), ``lifecycle`` (phases and outcomes as a table).

Import rule: the only package, with ``bridge.server``, ``bridge.sim`` and
``bridge.upstream`` built on it, that imports websockets.
"""
