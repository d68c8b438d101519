"""Live order ids are the client order ids exchanges see: tagged by tenant, so two
tenants trading on one exchange account never send the same one."""

from cryptodesk.services.live_blotter import LiveBlotter, tenant_tag


def test_each_tenant_numbers_its_live_orders_under_its_own_tag() -> None:
    assert (tenant_tag("acme"), tenant_tag("other")) == ("822b33", "d9298a")
    acme, other = LiveBlotter(tenant_tag("acme")), LiveBlotter(tenant_tag("other"))
    assert (acme.next_order_id(), other.next_order_id()) == ("L822b330000000001",
                                                             "Ld9298a0000000001")  # fmt: skip
    assert len(acme.next_order_id()) <= 36  # Binance's clientOrderId limit


def test_replay_numbers_on_from_tagged_and_older_untagged_ids() -> None:
    blotter = LiveBlotter(tenant_tag("acme"))
    for order_id in ("L0000000007", "L822b330000000009"):  # an untagged id from an older log
        blotter.note_submit({"order_id": order_id, "venue": "live:binance", "account": "main",
                             "request": {"client_order_id": None}})  # fmt: skip
    assert blotter.next_order_id() == "L822b330000000010"
