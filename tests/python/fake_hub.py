"""A stand-in for the Hugging Face hub on loopback, serving the routes `minerva pull` (hf-hub) uses
from real local files: the repo listing (`/api/models/{repo}/revision/{rev}`, with sizes and LFS
sha256 as the hub gives them with `?blobs=true`) and file downloads (`/{repo}/resolve/{rev}/{path}`
with ranges, `X-Repo-Commit`, `ETag`/`X-Linked-Etag`). Faults for tests: `--corrupt REPO/FILE`
serves one byte changed (its advertised sha256 stays the true one), `--rate` caps each response's
bytes per second. `--log` writes one JSON line per download request (`path`, `start`, `end`,
`event`: `begin` or `done`).

    python fake_hub.py --repo org/name=DIR [--repo ...] [--port 0]
prints `fake hub on http://127.0.0.1:PORT` once it listens.
"""

import argparse
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_EXTENSIONS = (".gguf", ".safetensors", ".bin")
BLOCK = 1 << 20


class Repo:
    def __init__(self, name, root):
        self.name = name
        self.root = root
        self.commit = hashlib.sha1(name.encode()).hexdigest()
        self.files = {}
        for folder, _, names in os.walk(root):
            for n in names:
                path = os.path.join(folder, n)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                self.files[rel] = self.describe(path)

    @staticmethod
    def describe(path):
        size = os.path.getsize(path)
        lfs = path.endswith(LFS_EXTENSIONS) or size > 10_000_000
        if lfs:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(BLOCK), b""):
                    digest.update(block)
            etag = digest.hexdigest()
        else:
            with open(path, "rb") as f:
                data = f.read()
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return {"path": path, "size": size, "lfs": lfs, "etag": etag}

    def listing(self):
        siblings = []
        for rel, f in sorted(self.files.items()):
            entry = {"rfilename": rel, "size": f["size"], "blobId": f["etag"]}
            if f["lfs"]:
                entry["lfs"] = {"sha256": f["etag"], "size": f["size"], "pointerSize": 134}
            siblings.append(entry)
        return {"id": self.name, "modelId": self.name, "sha": self.commit, "siblings": siblings}


class Hub:
    def __init__(self, repos, corrupt, rate, log):
        self.repos = repos
        self.corrupt = set(corrupt)
        self.rate = rate
        self.log_path = log
        self.lock = threading.Lock()

    def log(self, **entry):
        if not self.log_path:
            return
        with self.lock, open(self.log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def handler_for(hub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def setup(self):
            super().setup()
            # Headers and body go out as separate writes; without this, Nagle's algorithm holds
            # the body of a small file until the client's delayed ACK (40 ms) on a reused
            # connection, which no real hub does.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def not_found(self, code, message):
            body = json.dumps({"error": message}).encode()
            self.send_response(404)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.respond(body=True)

        def do_HEAD(self):
            self.respond(body=False)

        def respond(self, body):
            path = self.path.split("?", 1)[0]
            listing = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
            if listing:
                repo = hub.repos.get(listing.group(1))
                if repo is None:
                    return self.not_found("RepoNotFound", "Repository not found")
                data = json.dumps(repo.listing()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)
                return
            resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if not resolve:
                return self.not_found("RepoNotFound", "no such route")
            repo = hub.repos.get(resolve.group(1))
            if repo is None:
                return self.not_found("RepoNotFound", "Repository not found")
            name = resolve.group(3)
            f = repo.files.get(name)
            if f is None:
                return self.not_found("EntryNotFound", "Entry not found")
            size = f["size"]
            start, end = 0, size - 1
            ranged = self.headers.get("Range")
            if ranged:
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", ranged.strip())
                if not m or int(m.group(1)) >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(m.group(1))
                if m.group(2):
                    end = min(int(m.group(2)), size - 1)
            length = end - start + 1
            self.send_response(206 if ranged else 200)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{f["etag"]}"')
            if f["lfs"]:
                self.send_header("X-Linked-Etag", f'"{f["etag"]}"')
                self.send_header("X-Linked-Size", str(size))
            self.send_header("Accept-Ranges", "bytes")
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(length))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if not body:
                return
            key = f"{repo.name}/{name}"
            hub.log(path=key, start=start, end=end, event="begin")
            try:
                self.send_file(f["path"], start, length, key in hub.corrupt)
            except (BrokenPipeError, ConnectionResetError):
                hub.log(path=key, start=start, end=end, event="aborted")
                self.close_connection = True
                return
            hub.log(path=key, start=start, end=end, event="done")

        def send_file(self, path, start, length, corrupt):
            with open(path, "rb") as src:
                if not corrupt and not hub.rate:
                    self.connection.sendfile(src, start, length)
                    return
                src.seek(start)
                sent = 0
                began = time.monotonic()
                while sent < length:
                    block = bytearray(src.read(min(BLOCK // 4, length - sent)))
                    if corrupt and sent <= length // 2 < sent + len(block):
                        block[length // 2 - sent] ^= 0xFF
                    self.wfile.write(block)
                    sent += len(block)
                    if hub.rate:
                        ahead = sent / hub.rate - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", action="append", default=[], help="org/name=DIR")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--corrupt", action="append", default=[], help="org/name/FILE")
    parser.add_argument("--rate", type=float, default=0, help="bytes per second per response")
    parser.add_argument("--log")
    args = parser.parse_args()
    repos = {}
    for spec in args.repo:
        name, root = spec.split("=", 1)
        repos[name] = Repo(name, root)
    hub = Hub(repos, args.corrupt, args.rate, args.log)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(hub))
    server.daemon_threads = True
    print(f"fake hub on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
