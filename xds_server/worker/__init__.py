"""Reading, parsing, validating and compiling the config in a child process.

``job`` is what the child computes (a pure function of the file and the discovered endpoints,
also callable in-process), ``__main__`` is the child's entry point, and ``runner`` is the
control plane's side: one warm child at a time, the newest input wins, and a crash is a
precise problem instead of a hang.
"""
