"""signalbox: an event-triggered job engine on Kafka."""

__version__ = "0.1.0"
