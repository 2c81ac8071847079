"""Platform calls in one place: what differs between Linux, macOS and Windows.

Every other module goes through these functions, so that a portable fallback lives next to
each fast path.
"""

from __future__ import annotations

import os

_COPY_PIECE = 1 << 24  # bytes per buffered copy step where copy_file_range is missing


def copy_range(src_fd: int, dst_fd: int, count: int, src_offset: int, dst_offset: int) -> None:
    """Copy ``count`` bytes between two files at the given offsets (in-kernel where possible)."""
    copy = getattr(os, "copy_file_range", None)
    while count > 0 and copy is not None:
        try:
            done = copy(src_fd, dst_fd, count, src_offset, dst_offset)
        except OSError:  # not supported for these files (another file system): copy by hand
            break
        if done == 0:
            raise OSError(f"file {src_fd} ended {count} bytes early")
        count, src_offset, dst_offset = count - done, src_offset + done, dst_offset + done
    while count > 0:
        piece = os.pread(src_fd, min(count, _COPY_PIECE), src_offset)
        if not piece:
            raise OSError(f"file {src_fd} ended {count} bytes early")
        written = os.pwrite(dst_fd, piece, dst_offset)
        count, src_offset, dst_offset = count - written, src_offset + written, dst_offset + written
