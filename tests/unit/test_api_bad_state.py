"""No traceback, no 500 without a message: bad bodies and damaged state through the API (issue 14, item 9)."""

import pytest
from fastapi.testclient import TestClient

from proximity.api.app import Context, create_app
from proximity.settings import load_settings


@pytest.fixture
def client(tmp_path):
    settings = load_settings(state_dir=str(tmp_path), run_dir=str(tmp_path / "run"),
                             interfaces_file=str(tmp_path / "interfaces"), backend="lxc", lxc_path=str(tmp_path / "lxc"))
    context = Context(settings)
    with TestClient(create_app(context, start_background=False), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {context.tokens.ensure()}"
        yield c, settings


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize("field", ["memory", "cores"])
def test_a_non_finite_number_is_a_422_naming_the_field(client, field, value):
    c, _ = client
    r = c.post("/api/v1/containers", content=f'{{"hostname": "web-01", "{field}": {value}}}',
               headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", field]


def test_a_huge_integer_is_a_422_naming_the_field(client):
    c, _ = client
    r = c.post("/api/v1/containers", json={"hostname": "web-01", "memory": 10 ** 40})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "memory"]


@pytest.mark.parametrize("text", ["[1]", '{"x": 5}', "", "[{}]"])
def test_reservations_of_the_wrong_shape_give_a_json_error_with_the_message(client, text):
    c, settings = client
    settings.reservations_db.write_text(text)
    r = c.get("/api/v1/containers")
    assert r.status_code == 500 and "is damaged" in r.json()["detail"] and "gc --rebuild" in r.json()["detail"]


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"short", b"two words here, long enough"])
def test_a_damaged_token_file_is_a_clear_error_and_lets_nobody_in(tmp_path, raw):
    from proximity.api.auth import TokenStore
    from proximity.errors import HostError

    store = TokenStore(load_settings(state_dir=str(tmp_path), dnsmasq_conf=str(tmp_path / "dnsmasq.conf")))
    store.path.write_bytes(raw)
    with pytest.raises(HostError, match="token file .* is damaged.*proximity token rotate"):
        store.read()
    assert store.check(raw.decode(errors="replace")) is False
    assert store.check(store.rotate()) is True
