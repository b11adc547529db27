"""A slot with every field set, for the format's and the reader's tests."""
from supervisor_fcgi_ext.common.scoreboard import Slot

PID = 4242


def make_slot(**fields):
    base = dict(pid=PID, start_time=1700000000.25, state='idle', accepted_conn=3,
                requests=5, request_method='POST', request_uri='/a?b=c',
                content_length=12, request_start=1700000100.5,
                request_duration_us=1500, last_request_duration_us=1500,
                last_request_cpu=12.5, last_request_memory=30 << 20, last_status=201,
                active=0, threads=1, max_requests=1000, exceptions=1,
                protocol_errors=2, bytes_sent=777, connections=1)
    base.update(fields)
    return Slot(**base)
