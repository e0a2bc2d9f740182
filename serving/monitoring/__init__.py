"""What the server records about its traffic, off the request path, and what it shows of it.

    recorder         ``Recorder``: counts per version and time window, labels joined to scored rows
    counts           the additive counts a window holds (so windows of several processes merge by summing)
    awaiting_labels  scored rows awaiting their labels (SQLite, shared by the host's processes)
    host_windows     the windows of the host's other processes, published as files and merged on read
    dashboard        the guide's dashboard: the summary numbers and the self-contained page
    prometheus       the Prometheus series (multiprocess-aware)
"""
