"""The latency floor the framework allows on this broker: two plain Faust agents in a row.

Run by bench_e2e.py as `python bench/plain_relay.py BOOTSTRAP IN MID OUT DATADIR`. The first
agent decodes each record of IN and sends its bytes to MID; the second decodes MID and sends
to OUT. Nothing else: no matching, no table, no commit of its own. Two hops, like the
worker's events -> triggers (match step) and triggers -> job commands (schedule step), on
the same Faust driver, flow control and producer linger as the worker's app, so produce ->
OUT is the latency a two-hop Faust pipeline cannot go below here.
"""

from __future__ import annotations

import json
import sys
import time

import faust

from streams.kafka.faust_driver import App, register
from streams.settings import Settings

bootstrap, in_name, mid_name, out_name, datadir = sys.argv[1:6]
register()
app = App(
    f"relay-{int(time.time())}", broker=f"tansu://{bootstrap}", datadir=datadir, web_enabled=False,
    broker_session_timeout=6.0, broker_heartbeat_interval=1.0, consumer_auto_offset_reset="latest",
    producer_linger=Settings().producer_linger_ms / 1000,  # the worker's
)
raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
source, mid, out = app.topic(in_name, **raw), app.topic(mid_name, **raw), app.topic(out_name, **raw)


@app.agent(source)
async def first_hop(stream: faust.StreamT) -> None:
    async for value in stream:
        json.loads(value)
        await mid.send(value=value)


@app.agent(mid)
async def second_hop(stream: faust.StreamT) -> None:
    async for value in stream:
        json.loads(value)
        await out.send(value=value)


if __name__ == "__main__":
    from faust import Worker

    Worker(app, loglevel="warning", redirect_stdouts=False).execute_from_commandline()
