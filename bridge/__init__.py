"""bridge: a real-time websocket audio bridge for Vonage Voice API calls.

Import rule: imports nothing (``bridge.__version__`` is read by the CLI and the upstream link).
"""

__version__ = "0.1.0"
