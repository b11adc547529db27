"""FastCGI pool introspection and management for supervisor's fcgi-program."""

__version__ = "0.1.0"
API_VERSION = "1.0"
