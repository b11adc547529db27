"""The lab: the experiment and the real supervisord/nginx it runs, for
fcgi-experiment, the tests and the benchmarks; never imported by the plugin
or the worker.
"""
