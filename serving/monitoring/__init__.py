"""What the server records about its traffic, off the request path, and what it shows of it.

    recorder         ``Recorder``: counts per version and time window, labels joined to scored rows
    counts           the additive counts a window holds (so windows of several processes merge by summing)
    host_store       the host's monitoring store: one SQLite file the host's processes share
    awaiting_labels  scored rows awaiting their labels (a table of the host's store)
    host_windows     ``HostWindows``: each process's windows in the host's store, merged on read
    dashboard        the guide's dashboard: the summary numbers and the self-contained page
    prometheus       the Prometheus series (multiprocess-aware)
"""
