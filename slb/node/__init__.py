"""The processes around one proxy: the node, its control API, its workers, its files.

    node.py        Node: the applied config's version and hash, control API handlers, signals
    control.py     the small HTTP/1.1 server of the control API
    server.py      ProxyServer: listeners and the proxy context of one process
    supervisor.py  ProcessPlane: N worker processes behind one node
    worker.py      one worker process (``python -m slb.node.worker FD``)
    ipc.py         the messages between supervisor and workers
    files.py       the configuration file and the persisted snapshot
"""
