"""The official Python `kubernetes` client (what DeerFlow's provisioner uses) against
paddock-kubesim: namespace read/create, NodePort Service create/list by label/409, Pod
create, watch until Running, delete, node InternalIP. Exits non-zero on any mismatch.
Usage: python_client.py http://127.0.0.1:PORT
"""

import sys

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

cfg = client.Configuration()
cfg.host = sys.argv[1]
api = client.CoreV1Api(client.ApiClient(cfg))

try:
    api.read_namespace("sbx")
    raise SystemExit("namespace sbx should not exist yet")
except ApiException as e:
    assert e.status == 404, e.status
api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="sbx")))
assert api.read_namespace("sbx").metadata.name == "sbx"

labels = {"app": "deer-flow-sandbox", "sandbox-id": "x"}
svc = client.V1Service(
    metadata=client.V1ObjectMeta(name="sandbox-x-svc", labels=labels),
    spec=client.V1ServiceSpec(type="NodePort", selector={"sandbox-id": "x"},
                              ports=[client.V1ServicePort(name="http", port=8080, target_port=8080)]),
)
api.create_namespaced_service("sbx", svc)
listed = api.list_namespaced_service("sbx", label_selector="app=deer-flow-sandbox")
assert [s.metadata.name for s in listed.items] == ["sandbox-x-svc"]
port = listed.items[0].spec.ports[0].node_port
assert 30000 <= port <= 32767, port
assert int(listed.metadata.resource_version) > 0
try:
    api.create_namespaced_service("sbx", svc)
    raise SystemExit("duplicate create should fail")
except ApiException as e:
    assert e.status == 409, e.status

pod = client.V1Pod(metadata=client.V1ObjectMeta(name="sandbox-x", labels=labels),
                   spec=client.V1PodSpec(containers=[client.V1Container(name="sandbox", image="i")]))
api.create_namespaced_pod("sbx", pod)
phases = []
w = watch.Watch()
for ev in w.stream(api.list_namespaced_pod, "sbx", timeout_seconds=10):
    phases.append((ev["type"], ev["object"].status.phase))
    if ev["object"].status.phase == "Running":
        w.stop()
assert phases == [("ADDED", "Pending"), ("MODIFIED", "Running")], phases
assert api.read_namespaced_pod("sandbox-x", "sbx").status.pod_ip

api.delete_namespaced_pod("sandbox-x", "sbx")
api.delete_namespaced_service("sandbox-x-svc", "sbx")
try:
    api.read_namespaced_pod("sandbox-x", "sbx")
    raise SystemExit("deleted pod still readable")
except ApiException as e:
    assert e.status == 404, e.status
ips = [a.address for n in api.list_node().items for a in n.status.addresses if a.type == "InternalIP"]
assert ips == ["127.0.0.1"], ips
print("python kubernetes client: all checks passed")
