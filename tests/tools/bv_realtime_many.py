#!/usr/bin/python3
"""bv_realtime_many: N concurrent WebSocket clients in one process, for
bv_realtime's scale test (Debian python3-websockets; run with
/usr/bin/python3).

    bv_realtime_many.py URL N OUT [--timeout S]

Opens N connections to URL (which carries the token and topics), waits
until each has its "subscribed" reply, writes "ready N" to OUT, then waits
until each has received one "message" (or the timeout), writes
"received K" and "distinct <n>" (how many different message ids arrived)
to OUT, closes all and exits.  Connections open a few at a time so that
the listen backlog is never the limit.
"""
import asyncio
import json
import resource
import sys

import websockets


async def client(url, subscribed, done, got):
    async with websockets.connect(url, ping_interval=None, open_timeout=120) as ws:
        while True:
            m = json.loads(await ws.recv())
            if m.get('type') == 'subscribed':
                subscribed.release()
            elif m.get('type') == 'message':
                got.append(m['id'])
                break
        await done.wait()


async def main():
    url, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == '--timeout' else 120
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
    subscribed = asyncio.Semaphore(0)
    done = asyncio.Event()
    got = []
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(client(url, subscribed, done, got)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    for _ in range(n):
        await asyncio.wait_for(subscribed.acquire(), timeout)
    with open(out, 'a') as f:
        f.write('ready %d\n' % n)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < n and loop.time() < deadline:
        await asyncio.sleep(0.05)
    with open(out, 'a') as f:
        f.write('received %d\ndistinct %d\n' % (len(got), len(set(got))))
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)


asyncio.run(main())
