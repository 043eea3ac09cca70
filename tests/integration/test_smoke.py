from tests.support.client import Connection, request
from tests.support.proxy import simple_config


async def test_request_reaches_member_and_connection_is_reused(backend_factory, proxy_factory):
    backend = await backend_factory(name="a")
    proxy = await proxy_factory(simple_config([backend.address]))
    conn = await Connection.open(proxy.port)
    for _ in range(3):
        response = await conn.request("GET", "/hello")
        assert response.status == 200
        assert response.body == b"a GET /hello\n"
    await conn.close()
    assert backend.connections == 1
    response = await request(proxy.port, "GET", "/x", host="unknown.example")
    assert response.status == 200  # the only virtual server is the listener's default
