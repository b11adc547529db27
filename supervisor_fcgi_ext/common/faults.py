"""The fcgi namespace's own XML-RPC fault codes: the plugin raises them and
its clients (supervisorctl's commands, fcgi-guard) tell them apart, so both
sides import them from here.  supervisor's own codes run from 1 to 92."""

__all__ = ['Faults']


class Faults:
    NOT_FCGI_POOL = 200
    ALREADY_RESTARTING = 201
    RESTART_FAILED = 202
    NOT_ROLLABLE = 203
    SIZE_OUT_OF_RANGE = 204
