"""Pure log analysis (no Ray, no I/O but reading the given file) behind the built-in
`log_analysis`, `chunking` and `reduce` agents.

- `formats`: detect and parse sshd/syslog, Apache error and HDFS lines.
- `analysis`: `analyze` lines into a mergeable partial, `merge` partials exactly.
- `findings`: what a merged partial means (brute force, invalid users, error spikes, ...).
- `chunks`: line-aligned chunks of a file or text, planned without loading the file.

`findings(merge(partials of any chunking)) == findings(analyze(whole input))`, exactly.
"""

from actors.builtin.logs.analysis import Partial, analyze, merge
from actors.builtin.logs.chunks import plan_chunks, plan_file, plan_text_chunks, read_lines
from actors.builtin.logs.findings import findings
from actors.builtin.logs.formats import FORMATS, Record, detect_format

__all__ = [
    "FORMATS",
    "Partial",
    "Record",
    "analyze",
    "detect_format",
    "findings",
    "merge",
    "plan_chunks",
    "plan_file",
    "plan_text_chunks",
    "read_lines",
]
