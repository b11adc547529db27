"""python -m supervisor_fcgi_ext.worker: the same as the fcgi-worker command."""
import sys

from supervisor_fcgi_ext.worker.cli import main

sys.exit(main())
