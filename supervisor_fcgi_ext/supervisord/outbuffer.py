"""How much of a reply supervisor's HTTP channels offer the kernel per send.

supervisor's `deferring_http_channel` sets ``ac_out_buffer_size = 4096``
("to spew tail -f output faster (speculative)"), under medusa's own 64 KiB.
A channel sends at most that much per writable event, and each event costs a
pass of supervisord's loop, which visits every process (about 1 ms at 256
workers): the 443 KB getPoolStatus reply at 256 workers took 112 passes,
supervisor's own 308 KB getAllProcessInfo 79.  The plugin raises it when it
loads, to 256 KiB: a little over what an empty socket takes in one send (a
unix socket's default buffer, net.core.wmem_default, is 208 KiB), so a send
is bounded by the kernel, not by us.  Both replies then leave in 5 or 6
passes (10 and 8 with 64 KiB; 1 MiB does no better than 256 KiB).

Why that is safe, for every reply of supervisor's HTTP layer:

- memory: the whole reply is already in the channel's ``ac_out_buffer``
  (supervisor's globbing producer hands over a pushed body in one piece);
  the size only bounds the slice one ``send`` offers, a transient copy of
  at most 256 KiB.  What a slow or stalled client leaves queued is bounded
  by the kernel's socket buffer, whatever the size.
- a client that reads nothing is never reported writable once that buffer
  is full: it costs no pass, as before.  A slow one costs at most one pass
  per time the kernel frees room, as before, and no more passes.
- tail -f (supervisorctl's and the web page's): its producer is asked for
  more whenever fewer than ``ac_out_buffer_size`` bytes wait, and hands all
  that was appended at once: a burst now leaves in one send, not in 4 KB
  steps one pass apart; between bursts it still polls every 0.1 s.
- many clients: one pass sends what the kernel takes, up to 256 KiB, to
  each writable one instead of 4 KiB; the bytes to move are the same, in
  fewer passes.
"""

from supervisor.http import deferring_http_channel

__all__ = ['OUT_BUFFER', 'raise_out_buffer']

OUT_BUFFER = 1 << 18


def raise_out_buffer(logger, channel_class=deferring_http_channel):
    """Raise the channel class's send size to OUT_BUFFER once, and say so;
    a size somebody set at or above it stays.  Never raises: it runs in
    supervisord's plugin factory."""
    try:
        was = channel_class.ac_out_buffer_size
        if was < OUT_BUFFER:
            channel_class.ac_out_buffer_size = OUT_BUFFER
            logger.info('fcgi: supervisor HTTP replies offer up to %d bytes a '
                        'send (was %d): big replies in fewer loop passes'
                        % (OUT_BUFFER, was))
    except Exception as e:
        logger.error('fcgi: cannot raise the HTTP send size: %r' % (e,))
