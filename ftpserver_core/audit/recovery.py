"""Recovery of the journal a process left behind (crash, kill, hung stop)."""

import os

from . import journal as journals


def _incomplete(begin):
    """Return the record of an upload that was in progress when its process died."""
    record = {k: v for k, v in begin.items() if not k.startswith("_")}
    temp, final = begin.get("_temp"), begin.get("_final") or begin.get("path")
    on_disk = temp or final
    try:
        size = os.stat(on_disk).st_size if on_disk else None
    except OSError:
        size = None
    offset = begin.get("_offset") or 0
    record.update(
        event="upload_incomplete",
        success=False,
        reason="server_crashed",
        size=None if size is None else max(0, size - offset),
    )
    return record


def _clean_up(begin):
    """Remove an atomic upload's temporary file."""
    temp = begin.get("_temp")
    if not temp:
        return
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass


def recover(paths, write_all, keep_bad):
    """Write the records of one gone process's segments, then remove them.

    Return the number of records handed to ``write_all`` (0 when another
    process holds the files), or None when the database failed.
    """
    locked = journals.lock_all(paths)
    if locked is None:
        return 0
    fds, paths = locked
    if not paths:
        return 0
    try:
        records, ends, begins, bad = [], set(), {}, []
        for index, path in enumerate(paths):
            last = index == len(paths) - 1
            for item in journals.read_lines(path, bad):
                if "_end" in item:
                    ends.add(item["_end"])
                elif "_begin" in item:
                    # Open uploads are carried into each new segment: the
                    # newest holds every one still open.
                    if last:
                        begins[item.get("uid")] = item
                else:
                    records.append(item)
        keep_bad(bad)
        recorded = {r.get("uid") for r in records}
        open_uploads = [
            b for uid, b in begins.items() if uid not in ends and uid not in recorded
        ]
        records.extend(_incomplete(b) for b in open_uploads if b.get("_record", True))
        if not write_all(records):
            return None
        for begin in open_uploads:
            _clean_up(begin)
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        return len(records)
    finally:
        for fd in fds:
            os.close(fd)
