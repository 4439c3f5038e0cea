"""Channel layers: the messaging hub that lets consumers, workers and ordinary Django code talk to each other.

``get_channel_layer()`` returns the layer configured in ``CHANNEL_LAYERS``; ``InMemoryChannelLayer`` serves one
process, ``tether.layers.redis`` many processes and machines.
"""

from tether import DEFAULT_CHANNEL_LAYER
from tether.layers.base import BaseChannelLayer
from tether.layers.inmemory import InMemoryChannelLayer
from tether.layers.manager import ChannelLayerManager, channel_layers, get_channel_layer

__all__ = [
    "DEFAULT_CHANNEL_LAYER",
    "BaseChannelLayer",
    "ChannelLayerManager",
    "InMemoryChannelLayer",
    "channel_layers",
    "get_channel_layer",
]
