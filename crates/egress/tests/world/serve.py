"""The test world's web servers and package index (see docs/testing-network.md).

`serve`: HTTP and HTTPS listeners that answer by the Host they are asked for:
  - a static file under ROOT/sites/<host>/ (a directory answers with its index.html),
  - a git repository over smart HTTP for the hosts given with --git (git's own
    git-http-backend run as CGI),
  - anything else: a JSON echo of the request and of the local address it arrived on.
Every accepted connection and every request is appended to the --log file
(`conn <local address> <local port>`, `req <local address> <host> <method> <path> <headers
as JSON>`), so a test can prove a target was never reached, or see what reached it. Exits
when its standard input closes.

`index`: builds a small wheel and a PEP 503 simple index that points at it.
"""

import argparse
import base64
import hashlib
import http.server
import ipaddress
import json
import os
import re
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import urllib.parse
import zipfile

LOG_LOCK = threading.Lock()


def plain_ip(addr):
    """The address as text, an IPv4-mapped IPv6 address as its IPv4 address."""
    ip = ipaddress.ip_address(addr.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "paddock-world"
    timeout = 15

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def record(self, line):
        with LOG_LOCK:
            with open(self.server.log_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def host(self):
        h = self.headers.get("Host", "")
        if h.startswith("["):
            return h[1:].split("]")[0].lower()
        return h.rsplit(":", 1)[0].lower() if ":" in h else h.lower()

    def handle_one(self):
        local = plain_ip(self.connection.getsockname()[0])
        host = self.host()
        headers = json.dumps({k.lower(): v for k, v in self.headers.items()}, separators=(",", ":"))
        self.record(f"req {local} {host or '-'} {self.command} {self.path} {headers}")
        url = urllib.parse.urlsplit(self.path)
        git_root = self.server.git.get(host)
        if git_root is not None:
            return self.git(git_root, url)
        if self.command in ("GET", "HEAD") and host not in ("", ".", "..") and "/" not in host:
            site = os.path.join(self.server.root, "sites", host)
            path = os.path.normpath(os.path.join(site, urllib.parse.unquote(url.path).lstrip("/")))
            if path.startswith(site + os.sep) or path == site:
                if os.path.isdir(path):
                    path = os.path.join(path, "index.html")
                if os.path.isfile(path):
                    return self.file(path)
                if os.path.isdir(site):
                    return self.reply(404, "text/plain", b"not found\n")
        body = json.dumps(
            {
                "host": host,
                "local": local,
                "port": self.connection.getsockname()[1],
                "tls": isinstance(self.connection, ssl.SSLSocket),
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        ).encode()
        return self.reply(200, "application/json", body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = handle_one

    def reply(self, code, ctype, body):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def file(self, path):
        ctype = "text/html" if path.endswith(".html") else "application/octet-stream"
        with open(path, "rb") as f:
            self.reply(200, ctype, f.read())

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def git(self, project_root, url):
        body = self.body()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": project_root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": project_root,
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.0",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": urllib.parse.unquote(url.path),
            "QUERY_STRING": url.query,
            "REMOTE_ADDR": plain_ip(self.client_address[0]),
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
        }
        for k, v in self.headers.items():
            if k.lower() not in ("content-type", "content-length", "transfer-encoding"):
                env["HTTP_" + k.upper().replace("-", "_")] = v
        done = subprocess.run(
            [self.server.git_backend], input=body, env=env, capture_output=True, timeout=30
        )
        out = done.stdout
        sep = out.find(b"\r\n\r\n")
        head, rest = (out[:sep], out[sep + 4 :]) if sep >= 0 else out.split(b"\n\n", 1)
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if not any(n.lower() == "content-length" for n, _ in headers):
            self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, family, tls, opts):
        self.address_family = family
        self.tls = tls
        self.root = opts.root
        self.log_path = opts.log
        self.git = dict(g.split("=", 1) for g in opts.git)
        self.git_backend = opts.git_backend
        super().__init__(addr, Handler)

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            # [::] takes IPv4 too, as IPv4-mapped addresses.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def get_request(self):
        sock, addr = self.socket.accept()
        local = sock.getsockname()
        with LOG_LOCK:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(f"conn {plain_ip(local[0])} {local[1]}\n")
        if self.tls is not None:
            # The handshake happens in the request's thread, on its first read.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def shutdown_request(self, request):
        if isinstance(request, ssl.SSLSocket):
            # A TLS close_notify before the TCP close: strict clients (GnuTLS) call an end
            # without one a truncation.
            try:
                request.settimeout(3)
                request.unwrap()
            except (OSError, ValueError):
                pass
        super().shutdown_request(request)


def listener(spec):
    host, _, port = spec.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return (host, int(port)), family


def serve(opts):
    tls = None
    if opts.https:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(opts.cert, opts.key)
    servers = []
    for spec in opts.http:
        addr, family = listener(spec)
        servers.append(Server(addr, family, None, opts))
    for spec in opts.https:
        addr, family = listener(spec)
        servers.append(Server(addr, family, tls, opts))
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("ready", flush=True)
    # The world ends when whoever started this closes our standard input (or dies).
    sys.stdin.read()
    os._exit(0)


def record_hash(data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def index(opts):
    """A wheel of package NAME and a simple index for it, with the wheel on another host."""
    name, version = opts.name, opts.version
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'MESSAGE = "{opts.message}"\n'.encode(),
        f"{dist}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            "Summary: a package of the egress test world\n"
        ).encode(),
        f"{dist}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: paddock-egress-world\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{p},{record_hash(d)},{len(d)}\n" for p, d in files.items())
    record += f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    wheel_name = f"{name}-{version}-py3-none-any.whl"
    files_dir = os.path.join(opts.out, "sites", opts.files_host, "packages")
    os.makedirs(files_dir, exist_ok=True)
    wheel = os.path.join(files_dir, wheel_name)
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for p, d in files.items():
            z.writestr(p, d)
    with open(wheel, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    # PEP 503: a project's page is at its normalized name.
    project = re.sub(r"[-_.]+", "-", name).lower()
    simple = os.path.join(opts.out, "sites", opts.index_host, "simple")
    os.makedirs(os.path.join(simple, project), exist_ok=True)
    with open(os.path.join(simple, "index.html"), "w", encoding="utf-8") as f:
        f.write(f'<!DOCTYPE html>\n<html><body><a href="/simple/{project}/">{name}</a></body></html>\n')
    with open(os.path.join(simple, project, "index.html"), "w", encoding="utf-8") as f:
        f.write(
            "<!DOCTYPE html>\n<html><body>"
            f'<a href="https://{opts.files_host}/packages/{wheel_name}#sha256={sha}">{wheel_name}</a>'
            "</body></html>\n"
        )
    print(wheel_name)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--root", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("--http", action="append", default=[])
    s.add_argument("--https", action="append", default=[])
    s.add_argument("--cert")
    s.add_argument("--key")
    s.add_argument("--git", action="append", default=[], help="HOST=PROJECT_ROOT")
    s.add_argument("--git-backend", default="git-http-backend")
    i = sub.add_parser("index")
    i.add_argument("--out", required=True)
    i.add_argument("--name", required=True)
    i.add_argument("--version", required=True)
    i.add_argument("--message", required=True)
    i.add_argument("--index-host", required=True)
    i.add_argument("--files-host", required=True)
    opts = p.parse_args()
    if opts.cmd == "serve":
        serve(opts)
    else:
        index(opts)


if __name__ == "__main__":
    main()
