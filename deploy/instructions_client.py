"""Sends N POSTs over one keep-alive connection and fails on any answer
that is not 200 (deploy/instructions.sh drives it). In the body `%IP%`
becomes a different client address per request and `%N%` the request's
number modulo `QZ_KEYS` (default 50 000; as the shared instrument's
rate-limit script varies them) and `%S%` `false` for every fourth request,
else `true` (as its anti-ATO script over many identifiers), and
`%TOKEN%` line `k` of the file `QZ_TOKENS` (a token per request, each
seen once); other bodies are sent as they are."""
import http.client
import os
import sys

host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
body = os.environ["QZ_BODY"]
headers = {"Content-Type": "application/json"}
if os.environ.get("QZ_SECRET"):
    headers["Authorization"] = "Bearer " + os.environ["QZ_SECRET"]
conn = http.client.HTTPConnection(host, port)
start = int(os.environ.get("QZ_START", "0"))
keys = int(os.environ.get("QZ_KEYS", "50000"))
tokens = open(os.environ["QZ_TOKENS"]).read().split() if os.environ.get("QZ_TOKENS") else []
for k in range(start, start + n):
    b = body.replace("%IP%", f"10.{k // 65536 % 256}.{k // 256 % 256}.{k % 256}").replace("%N%", str(k % keys)).replace(
        "%S%", "false" if k % 4 == 0 else "true"
    )
    if tokens:
        b = b.replace("%TOKEN%", tokens[k])
    conn.request("POST", path, body=b, headers=headers)
    res = conn.getresponse()
    data = res.read()
    if res.status != 200:
        sys.exit(f"{path}: {res.status} {data[:200]!r}")
