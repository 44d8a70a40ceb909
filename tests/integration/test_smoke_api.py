from tests.fhir_client import patient, post


def test_create_and_read_patient(client):
    created = post(client, patient())
    read = client.get(f"/fhir/Patient/{created['id']}")
    assert read.status_code == 200
    assert read.json()["name"][0]["family"] == "Testchild"
    assert read.headers["etag"] == 'W/"1"'
