"""The request path of one proxy process, in reading order.

    listener.py  listening sockets (SO_REUSEPORT)
    (slb/protocol.py, slb/upstream.py, slb/http11.py: the client and upstream protocols and the
     HTTP rules, moving here as client, exchange, rules, head, forward, flow, upstream)
    router.py    Host and path to a target, compiled from slb.model.hosts' rules
    compile.py   Config -> Runtime: everything derived from a config, built once per apply
    context.py   ProxyContext: the ONE runtime reference swapped on apply; the sweeper
    accesslog.py one line per request, written in batches
"""
