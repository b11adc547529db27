"""fcgi-worker: the reference FastCGI worker, one process of a pool.

Code here runs in a worker's per-request path, where a microsecond matters.
"""
