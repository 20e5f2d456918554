"""signalbox: an event-triggered job engine on Kafka."""

from streams import native

__version__ = "0.1.0"

native.install()  # the matcher compiled with mypyc, where a current build exists (native.py)
