"""Sends N identical POSTs over one keep-alive connection and fails on any
answer that is not 200 (deploy/instructions.sh drives it)."""
import http.client
import os
import sys

host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
body = os.environ["QZ_BODY"]
headers = {"Content-Type": "application/json"}
if os.environ.get("QZ_SECRET"):
    headers["Authorization"] = "Bearer " + os.environ["QZ_SECRET"]
conn = http.client.HTTPConnection(host, port)
for _ in range(n):
    conn.request("POST", path, body=body, headers=headers)
    res = conn.getresponse()
    data = res.read()
    if res.status != 200:
        sys.exit(f"{path}: {res.status} {data[:200]!r}")
