from tests.conftest import EXAMPLE_2, Api


def test_example_2_leaves_id_1_complete(api: Api) -> None:
    r = api.push(EXAMPLE_2)
    assert r.status_code == 201
    assert r.json() == {"code": 201, "message": "Created", "table": "orders", "inserted": 2, "replaced": 1}
    assert [(row["id"], row["status"]) for row in api.rows(order="id")] == [(1, "complete"), (2, "pending")]
