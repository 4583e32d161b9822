"""Latency probe: GETs URL every INTERVAL seconds on one keep-alive
connection until it receives SIGTERM, then prints "p50 p99 max count" of the
response times in milliseconds (errors count as their time to fail).

Usage: python3 bench/probe.py URL [INTERVAL]
"""
import http.client
import signal
import sys
import time
import urllib.parse

url = urllib.parse.urlsplit(sys.argv[1])
interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.01
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
times = []
conn = None
while not stop:
    started = time.monotonic()
    try:
        if conn is None:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        conn.request("GET", url.path or "/")
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        conn = None
    took = (time.monotonic() - started) * 1000
    times.append(took)
    if took > 100:
        print(f"probe: {took:.0f} ms at {time.time():.3f}", file=sys.stderr)
    time.sleep(interval)
times.sort()
if not times:
    print("0 0 0 0")
else:
    def at(q):
        return times[min(len(times) - 1, int(q * len(times)))]
    print(f"{at(0.5):.1f} {at(0.99):.1f} {times[-1]:.1f} {len(times)}")
