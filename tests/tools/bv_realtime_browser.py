#!/usr/bin/python3
"""bv_realtime_browser: drive headless Chromium through the DevTools
protocol for bv_realtime's browser test (run with /usr/bin/python3).

    bv_realtime_browser.py --chromium PATH --profile DIR [--timeout S]
                           [--title TITLE] URL

Starts Chromium headless with --remote-debugging-pipe (the protocol on
file descriptors 3 and 4: no port to pick or to race for), opens URL in its
page, and checks document.title every 100 ms until it equals TITLE
(default "done") or --timeout seconds (default 60) pass.  Then prints the
page's DOM (document.documentElement.outerHTML) on stdout, closes the
browser and exits 0 when the title was reached, 1 otherwise.

Why not `chromium --headless --dump-dom --virtual-time-budget`: in that mode
Chromium 156 completes the WebSocket handshake on the network side but the
page's WebSocket often stays CONNECTING (always when it is the page's only
connection; seen with a 40-line Python server as well); a page driven
through the DevTools protocol, as here, gets its WebSocket every time.
"""
import argparse
import json
import os
import select
import subprocess
import sys
import time


class Pipe:
    """The DevTools protocol over Chromium's pipe: JSON messages ending in NUL."""

    def __init__(self, wfd, rfd):
        self.wfd, self.rfd, self.buf, self.n = wfd, rfd, b'', 0

    def call(self, method, params=None, session=None, deadline=None):
        self.n += 1
        msg = {'id': self.n, 'method': method, 'params': params or {}}
        if session:
            msg['sessionId'] = session
        os.write(self.wfd, json.dumps(msg).encode() + b'\0')
        while True:
            while b'\0' not in self.buf:
                left = None if deadline is None else max(0.0, deadline - time.time())
                if not select.select([self.rfd], [], [], left)[0]:
                    raise TimeoutError(method)
                chunk = os.read(self.rfd, 65536)
                if not chunk:
                    raise EOFError('chromium closed the protocol pipe')
                self.buf += chunk
            raw, self.buf = self.buf.split(b'\0', 1)
            r = json.loads(raw)
            if r.get('id') == self.n:
                if 'error' in r:
                    raise RuntimeError('%s: %s' % (method, r['error']))
                return r.get('result', {})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('url')
    ap.add_argument('--chromium', default='/usr/bin/chromium')
    ap.add_argument('--profile', required=True)
    ap.add_argument('--timeout', type=float, default=60)
    ap.add_argument('--title', default='done')
    a = ap.parse_args()

    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()

    def fds():
        # the child's 3 and 4 (copies first: the pipes may be 3 or 4 here)
        r, w = os.dup(to_child_r), os.dup(from_child_w)
        os.dup2(r, 3)
        os.dup2(w, 4)

    proc = subprocess.Popen(
        [a.chromium, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
         '--user-data-dir=' + a.profile, '--remote-debugging-pipe', 'about:blank'],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=(3, 4),
        preexec_fn=fds)
    os.close(to_child_r)
    os.close(from_child_w)
    p = Pipe(to_child_w, from_child_r)
    deadline = time.time() + a.timeout
    reached, dom = False, ''
    try:
        page = None
        while page is None:
            targets = p.call('Target.getTargets', deadline=deadline)['targetInfos']
            page = next((t['targetId'] for t in targets if t['type'] == 'page'), None)
            if page is None:
                time.sleep(0.1)
        s = p.call('Target.attachToTarget', {'targetId': page, 'flatten': True},
                   deadline=deadline)['sessionId']
        p.call('Page.navigate', {'url': a.url}, s, deadline)
        while time.time() < deadline:
            r = p.call('Runtime.evaluate', {'expression': 'document.title'}, s, deadline)
            if r.get('result', {}).get('value') == a.title:
                reached = True
                break
            time.sleep(0.1)
        r = p.call('Runtime.evaluate', {'expression': 'document.documentElement.outerHTML'}, s,
                   time.time() + 10)
        dom = r.get('result', {}).get('value', '')
    except (TimeoutError, EOFError, RuntimeError) as e:
        print('bv_realtime_browser: %s' % e, file=sys.stderr)
    sys.stdout.write(dom)
    sys.stdout.flush()
    try:
        p.call('Browser.close', deadline=time.time() + 5)
    except Exception:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return 0 if reached else 1


if __name__ == '__main__':
    sys.exit(main())
