"""The same deposit flow with the objects in a real S3-compatible server (moto over HTTP)."""

import json

from broker.services.worker import run_pending


def test_a_deposit_to_s3_is_sealed_and_its_objects_follow_the_bucket_layout(s3_lab):
    escrow, lab = s3_lab
    files = {"weights/model.safetensors": bytes(200_000), "config.json": b"{}", "empty": b""}
    deposit = lab.open(files)
    for path, data in files.items():
        assert lab.upload(deposit, path, data).status_code == 200
    assert lab.post(f"/api/v1/deposits/{deposit['deposit_id']}/finalize").status_code == 202
    run_pending(escrow)
    assert lab.get(f"/api/v1/deposits/{deposit['deposit_id']}").json["state"] == "sealed"
    bucket = escrow.store
    prefix = f"deposits/{deposit['deposit_id']}/"
    manifest = json.loads(bucket.get_bytes(prefix + "manifest.json"))
    assert {f["path"] for f in manifest["files"]} == set(files)
    for name in ("manifest.sig", "identity.wrapped"):
        assert bucket.head(prefix + name) is not None


def test_a_part_url_for_s3_points_at_the_store_not_the_broker(s3_lab, moto_endpoint):
    _escrow, lab = s3_lab
    deposit = lab.open({"a": b"1"})
    base = f"/api/v1/deposits/{deposit['deposit_id']}/files/0"
    lab.post(base + "/upload")
    (part,) = lab.post(base + "/parts", {"numbers": [1]}).json["parts"]
    assert part["url"].startswith(moto_endpoint.url)
    assert part["method"] == "PUT"
