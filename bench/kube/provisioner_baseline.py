"""Baseline for the Kubernetes-backend benchmark: a FastAPI service that makes the same
Kubernetes API calls, in the same order, as DeerFlow's provisioner does per request
(create: read Service for the fast path, create Pod, create NodePort Service, read
Service for the NodePort, read Pod phase; get: read Service, read Pod; delete: delete
Service, delete Pod), with the official `kubernetes` client and sync handlers (run in
FastAPI's thread pool). Configured by KUBECONFIG_PATH, K8S_NAMESPACE, NODE_HOST,
PROVISIONER_API_KEY.
"""

import hmac
import os

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from pydantic import BaseModel

NS = os.environ.get("K8S_NAMESPACE", "deer-flow")
NODE_HOST = os.environ.get("NODE_HOST", "127.0.0.1")
KEY = os.environ.get("PROVISIONER_API_KEY", "")
config.load_kube_config(config_file=os.environ["KUBECONFIG_PATH"])
core = client.CoreV1Api()
app = FastAPI()


@app.middleware("http")
async def auth(request: Request, call_next):
    if request.url.path.startswith("/api/"):
        got = request.headers.get("x-api-key", "")
        if not KEY or not hmac.compare_digest(got, KEY):
            return JSONResponse({"detail": "Unauthorized"}, status_code=401)
    return await call_next(request)


class Create(BaseModel):
    sandbox_id: str
    thread_id: str | None = None


LABELS = {"app": "deer-flow-sandbox", "app.kubernetes.io/name": "deer-flow",
          "app.kubernetes.io/component": "sandbox"}


def node_port(sid):
    try:
        svc = core.read_namespaced_service(f"sandbox-{sid}-svc", NS)
    except ApiException:
        return None
    for p in svc.spec.ports or []:
        if p.name == "http":
            return p.node_port
    return None


def phase(sid):
    try:
        return core.read_namespaced_pod(f"sandbox-{sid}", NS).status.phase or "Unknown"
    except ApiException:
        return "NotFound"


def pod(sid, tid):
    labels = dict(LABELS, **{"sandbox-id": sid})
    probe = client.V1Probe(http_get=client.V1HTTPGetAction(path="/v1/sandbox", port=8080))
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=f"sandbox-{sid}", labels=labels),
        spec=client.V1PodSpec(
            containers=[client.V1Container(
                name="sandbox", image="sandbox:latest",
                ports=[client.V1ContainerPort(name="http", container_port=8080)],
                readiness_probe=probe, liveness_probe=probe,
                volume_mounts=[client.V1VolumeMount(name="user-data", mount_path="/mnt/user-data")],
            )],
            volumes=[client.V1Volume(name="user-data", host_path=client.V1HostPathVolumeSource(
                path=f"/.deer-flow/threads/{tid}/user-data", type="DirectoryOrCreate"))],
        ),
    )


def service(sid):
    labels = dict(LABELS, **{"sandbox-id": sid})
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=f"sandbox-{sid}-svc", labels=labels),
        spec=client.V1ServiceSpec(type="NodePort", selector={"sandbox-id": sid},
                                  ports=[client.V1ServicePort(name="http", port=8080, target_port=8080)]),
    )


def answer(sid, port):
    return {"sandbox_id": sid, "sandbox_url": f"http://{NODE_HOST}:{port}", "status": phase(sid)}


@app.post("/api/sandboxes")
def create(req: Create):
    sid, tid = req.sandbox_id, req.thread_id or req.sandbox_id
    port = node_port(sid)
    if port:
        return answer(sid, port)
    try:
        core.create_namespaced_pod(NS, pod(sid, tid))
    except ApiException as e:
        if e.status != 409:
            raise HTTPException(500, f"Pod creation failed: {e.reason}")
    try:
        core.create_namespaced_service(NS, service(sid))
    except ApiException as e:
        if e.status != 409:
            raise HTTPException(500, f"Service creation failed: {e.reason}")
    port = node_port(sid)
    if not port:
        raise HTTPException(500, "NodePort was not allocated in time")
    return answer(sid, port)


@app.get("/api/sandboxes/{sid}")
def get(sid: str):
    port = node_port(sid)
    if not port:
        raise HTTPException(404, f"Sandbox '{sid}' not found")
    return answer(sid, port)


@app.delete("/api/sandboxes/{sid}")
def delete(sid: str):
    for fn, name in ((core.delete_namespaced_service, f"sandbox-{sid}-svc"),
                     (core.delete_namespaced_pod, f"sandbox-{sid}")):
        try:
            fn(name, NS)
        except ApiException as e:
            if e.status != 404:
                raise HTTPException(500, f"Partial cleanup: {e.reason}")
    return {"ok": True, "sandbox_id": sid}
