"""The ceiling the framework allows: a Faust agent that only decodes events.

Run by bench_e2e.py as `python bench/plain_agent.py BOOTSTRAP TOPIC COUNT DATADIR`; prints
`DONE <seconds from first to last event>` once COUNT events are decoded.
"""

from __future__ import annotations

import json
import sys
import time

import faust

from streams.kafka.faust_driver import register

bootstrap, topic_name, count, datadir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
register()
app = faust.App(
    f"plain-{int(time.time())}", broker=f"tansu://{bootstrap}", datadir=datadir, web_enabled=False,
    broker_session_timeout=6.0, broker_heartbeat_interval=1.0, consumer_auto_offset_reset="earliest",
)
topic = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
seen = {"n": 0, "first": 0.0}


@app.agent(topic)
async def decode(stream: faust.StreamT) -> None:
    async for value in stream:
        json.loads(value)
        seen["n"] += 1
        if seen["n"] == 1:
            seen["first"] = time.perf_counter()
        if seen["n"] == count:
            print(f"DONE {time.perf_counter() - seen['first']:.3f}", flush=True)


if __name__ == "__main__":
    from faust import Worker

    Worker(app, loglevel="warning", redirect_stdouts=False).execute_from_commandline()
