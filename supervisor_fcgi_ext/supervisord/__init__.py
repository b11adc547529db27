"""The plugin: everything here runs inside supervisord's own process.

A mistake here takes every service on the host down, so: no blocking call,
no work unbounded in what others control, and every callback from
supervisord catches and logs what it raises.
"""
