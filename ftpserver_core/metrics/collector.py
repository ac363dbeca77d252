"""The workers' metrics, read from prometheus-client's multiprocess files."""

import glob
import os

from prometheus_client import multiprocess


def files_made(paths):
    """Return the files of ``paths`` a worker has finished creating (not empty)."""
    made = []
    for path in paths:
        try:
            if os.path.getsize(path):
                made.append(path)
        except OSError:
            pass  # a dead worker's, removed meanwhile
    return made


class WorkersCollector(multiprocess.MultiProcessCollector):
    """prometheus-client's collector, past the files being created.

    A worker creates its file empty and then sizes it: read in between, the
    whole scrape failed (an internal error for /metrics and /health just
    after a start, on a loaded machine).
    """

    def collect(self):
        paths = glob.glob(os.path.join(self._path, "*.db"))
        return self.merge(files_made(paths), accumulate=True)
