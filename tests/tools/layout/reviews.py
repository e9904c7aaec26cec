"""Writes into DIR the AdmissionReviews `record.sh` sends (the admission bench's four cases: MPS,
time-slicing, unmanaged, denied) and a wrk script that sends them in turn."""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])
fixture = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "deployment-web.json"
cases = {
    "mps": {"gpushare.io/gpu": "1", "gpushare.io/mps-percentage": "20"},
    "time-slicing": {"gpushare.io/gpu": "0"},
    "unmanaged": None,
    "denied": {"gpushare.io/gpu": "0,1"},
}
for name, annotations in cases.items():
    obj = json.loads(fixture.read_text())
    obj["metadata"]["namespace"] = "default"
    obj["metadata"]["name"] = name
    if annotations:
        obj["metadata"]["annotations"] = annotations
    gvk = {"group": "apps", "version": "v1", "kind": "Deployment"}
    gvr = {"group": "apps", "version": "v1", "resource": "deployments"}
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"layout-{name}", "kind": gvk, "resource": gvr, "requestKind": gvk,
            "requestResource": gvr, "name": name, "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "layout"}, "object": obj, "oldObject": None,
            "dryRun": False, "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }
    (out / f"{name}.json").write_text(json.dumps(review))

names = ", ".join(f'"{name}"' for name in cases)
(out / "reviews.lua").write_text(f"""local bodies = {{}}
for i, name in ipairs({{{names}}}) do
  local f = io.open("{out}/" .. name .. ".json")
  bodies[i] = f:read("*a")
  f:close()
end
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", nil, {{["Content-Type"] = "application/json"}}, bodies[n % #bodies + 1])
end
""")
