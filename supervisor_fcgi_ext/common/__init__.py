"""Contracts both sides import: the scoreboard format and the fairness figures.

Nothing here imports supervisor, so a worker imports it without supervisord's
code, and supervisord without a worker's.
"""
