"""tether: real-time power for Django.

ASGI, WebSockets, consumers, routing and channel layers with the Django Channels programming model under the import
root ``tether``.
"""

__all__ = ["DEFAULT_CHANNEL_LAYER", "__version__"]

__version__ = "0.1.0"

#: The alias of the channel layer that consumers, workers and ``get_channel_layer()`` use unless told otherwise.
DEFAULT_CHANNEL_LAYER = "default"
