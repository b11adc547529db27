"""A worker that accepts exactly N connections from fd 0 and holds them.

Ground truth for the per-PID connection figures: with W of these in a pool
and W*N clients, every worker holds exactly N connections (blocking accept()
wakes one waiter at a time, and a worker stops accepting after N).
"""
import socket
import sys
import time

limit = int(sys.argv[1])
listener = socket.socket(fileno=0)
held = [listener.accept()[0] for _ in range(limit)]
while True:
    time.sleep(60)
