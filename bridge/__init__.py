"""bridge: a real-time websocket audio bridge for Vonage Voice API calls."""

__version__ = "0.1.0"
