#!/bin/sh
# Apply migrations, then hand the process (PID 1, so it receives SIGTERM) to the worker.
set -e
/usr/local/bin/cdp-meta-sync migrate
exec /usr/local/bin/cdp-meta-sync "$@"
