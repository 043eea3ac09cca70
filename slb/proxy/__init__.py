"""The request path of one proxy process, in reading order.

    listener.py  listening sockets (SO_REUSEPORT)
    client.py    ClientProtocol: callbacks record, one dispatch, how an exchange ends, the edge
    exchange.py  Exchange: one request and its response
    rules.py     the HTTP rules, named, with their RFC sections (index at the top)
    head.py      field tables, the request head sent upstream, the proxy's own answers
    forward.py   one try on a member; the rules for trying again
    upstream.py  UpstreamConnection: one member connection, where a response ends
    relay.py     the response framed for the client
    flow.py      pause/resume both ways, deadlines, lingering close
    router.py    Host, path and conditions to a route, compiled from slb.model.hosts' rules
    target.py    Target: the group a request goes to, with its timeouts
    actions.py   a route's own rules: splits, redirects, rewrites, header rules, allow/deny,
                 rate limits; how conditions and hash keys read a request
    compile.py   Config -> Runtime: everything derived from a config, built once per apply
    context.py   ProxyContext: the ONE runtime reference swapped on apply; the sweeper
    accesslog.py one line per request, written in batches
    answers.py   the error log: one line per answer the proxy makes itself, rate-limited
"""
