"""Demo plant historian: serves recorded tag values from its SQLite database over HTTP."""

import json
import sqlite3
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DB = Path(__file__).with_name("data") / "history.db"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        con = sqlite3.connect(f"file:{DB}?mode=ro", uri=True)
        try:
            if self.path == "/health":
                rows = con.execute("select count(*) from samples").fetchone()[0]
                body = {"status": "ok", "samples": rows}
            elif self.path.startswith("/api/tags/") and self.path.endswith("/latest"):
                tag = self.path.split("/")[3]
                row = con.execute(
                    "select ts, value from samples where tag = ? order by ts desc limit 1", (tag,)
                ).fetchone()
                if row is None:
                    return self._send(404, {"error": f"unknown tag {tag}"})
                body = {"tag": tag, "ts": row[0], "value": row[1]}
            elif self.path == "/api/tags":
                body = {"tags": [r[0] for r in con.execute("select distinct tag from samples")]}
            else:
                return self._send(404, {"error": "not found"})
        finally:
            con.close()
        self._send(200, body)

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    print(f"historian: serving {DB} on :8080", flush=True)
    ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
