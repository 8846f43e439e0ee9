import requests

from tests.integration.sending_support import run_sender


def message(to="ann@example.org", **extra):
    return {"from": {"email": "billing@example.com"}, "to": [{"email": to}], "subject": "Invoice", "text": "hi"} | extra


def test_a_queued_job_is_sent_and_gets_message_ids(client, auth, send_settings, simulator):
    job_id = client.post("/queue", json=message(), headers=auth).json["id"]
    outcome = run_sender(send_settings)
    assert outcome.sent == 1
    story = client.get(f"/status/{job_id}", headers=auth).json
    assert story["status"] == "sent"
    assert [e["type"] for e in story["events"]] == ["queued", "sending", "sent"]
    recipient = story["recipients"][0]
    assert recipient["status"] == "sent"
    assert int(recipient["message_id"]) > 2**53
    sends = requests.get(f"{simulator}/_sim/sends", timeout=5).json()
    assert sends["by_custom_id"] == {job_id: 1}
