"""Contracts several processes import: the scoreboard format, the FastCGI
codec, the fairness figures, safe text and the fault codes.

Nothing here imports supervisor, so a worker imports it without supervisord's
code, and supervisord without a worker's.
"""
