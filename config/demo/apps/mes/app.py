"""Demo plant MES: reads its config, asks the historian for production data, serves /health."""

import configparser
import json
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONF = configparser.ConfigParser()
CONF.read("/etc/mes/mes.conf")
HISTORIAN = CONF["historian"]["url"]
PORT = CONF.getint("server", "port")


def historian(path):
    with urllib.request.urlopen(HISTORIAN + path, timeout=3) as resp:
        return json.load(resp)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/health":
            try:
                tags = historian("/api/tags")["tags"]
                body = {"status": "ok", "historian": "reachable", "tags": len(tags)}
            except OSError as exc:
                body = {"status": "degraded", "historian": f"unreachable: {exc}", "tags": 0}
        elif self.path == "/api/orders/current":
            level = historian("/api/tags/LT-101/latest")["value"]
            body = {"order": "PO-4711", "product": "PET-0.5L", "tank_level": level}
        else:
            body = {"error": "not found"}
        data = json.dumps(body).encode()
        self.send_response(200 if "error" not in body else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    print(f"mes: historian at {HISTORIAN}, serving on :{PORT}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
