#!/usr/bin/python3
"""bv_realtime_client: a WebSocket client for bv_realtime's tests (Debian
python3-websockets; run with /usr/bin/python3).

    bv_realtime_client.py URL [--send JSON]... [--out FILE] [--idle S]
                          [--max-messages N] [--slow] [--header 'Name: v']
                          [--send-when SUBSTRING JSON]...

Connects to URL, sends each --send text frame in order, and writes every
frame it receives as one line of FILE (default stdout), flushed at once.
When the server closes it writes {"closed": code, "reason": "..."}.  It
stops after --idle seconds without a frame (default 30), after
--max-messages frames of type "message", or at the close.  --slow makes it
a client that never reads: a tiny receive buffer and no reading at all,
until the server gives up on it (then it reads what is left, to see the
close).  --send-when sends JSON once, right after the first received
frame that contains SUBSTRING (a client that acts on an event, e.g. sends
"typing" again after seeing a ban).
"""
import argparse
import asyncio
import json
import socket
import sys
import urllib.parse

import websockets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('url')
    ap.add_argument('--send', action='append', default=[])
    ap.add_argument('--out')
    ap.add_argument('--idle', type=float, default=30)
    ap.add_argument('--max-messages', type=int, default=0)
    ap.add_argument('--slow', action='store_true')
    ap.add_argument('--slow-seconds', type=float, default=60)
    ap.add_argument('--header', action='append', default=[])
    ap.add_argument('--send-when', nargs=2, action='append', default=[])
    a = ap.parse_args()
    out = open(a.out, 'a', buffering=1) if a.out else sys.stdout

    def emit(obj):
        out.write((obj if isinstance(obj, str) else json.dumps(obj)) + '\n')
        out.flush()

    async def run():
        headers = [tuple(h.split(': ', 1)) for h in a.header]
        kw = {'extra_headers': headers, 'ping_interval': None, 'max_size': 2 ** 24}
        if a.slow:
            u = urllib.parse.urlparse(a.url)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((u.hostname, u.port))
            kw.update(sock=sock, max_queue=1, read_limit=4096)
        try:
            async with websockets.connect(a.url, **kw) as ws:
                emit({'open': True})
                for s in a.send:
                    await ws.send(s)
                if a.slow:
                    # Never read (the library stops once its queue of one is
                    # full); then read what is left to see the close.
                    ws.transport.pause_reading()
                    await asyncio.sleep(a.slow_seconds)
                    ws.transport.resume_reading()
                n = 0
                while True:
                    try:
                        frame = await asyncio.wait_for(ws.recv(), a.idle)
                    except asyncio.TimeoutError:
                        emit({'idle': True})
                        return
                    if not a.slow:
                        emit(frame)
                    for w in list(a.send_when):
                        if isinstance(frame, str) and w[0] in frame:
                            a.send_when.remove(w)
                            await ws.send(w[1])
                    try:
                        if json.loads(frame).get('type') == 'message':
                            n += 1
                    except ValueError:
                        pass
                    if a.max_messages and n >= a.max_messages:
                        return
        except websockets.ConnectionClosed as e:
            emit({'closed': e.code, 'reason': e.reason})
        except (OSError, websockets.InvalidHandshake) as e:
            emit({'error': str(e)})

    asyncio.run(run())


if __name__ == '__main__':
    main()
