"""A worker that accepts nothing until SIGUSR1, then accepts and closes all.

Lets a test fill the listen queue, drain it on cue, and then ask whether the
plugin's own sampling saw the peak (a status call now would see 0).
"""
import signal
import socket

signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
signal.sigwait([signal.SIGUSR1])
listener = socket.socket(fileno=0)
while True:
    listener.accept()[0].close()
