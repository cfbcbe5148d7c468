#!/usr/bin/env python3
"""Readiness probe for a CQL server, with no dependencies (there is no cqlsh here).

Speaks CQL native protocol v4 over a plain socket: STARTUP (CQL_VERSION 3.0.0),
expects READY, then runs `SELECT release_version FROM system.local` at
consistency ONE and prints the version from the ROWS result.

An open port is not enough: Cassandra accepts connections before it can serve
queries, so only an answered SELECT counts as ready.

Usage: cql_ping.py [HOST] [PORT] [--timeout SECONDS]
Exit status: 0 answered; 1 cannot connect / connection closed; 2 the server
answered with an error or something this probe does not understand.
"""

import argparse
import socket
import struct
import sys

VERSION_REQUEST = 0x04  # protocol v4, request direction
OP_ERROR, OP_STARTUP, OP_READY, OP_QUERY, OP_RESULT = 0x00, 0x01, 0x02, 0x07, 0x08
CONSISTENCY_ONE = 0x0001
RESULT_ROWS = 0x0002
QUERY = "SELECT release_version FROM system.local"


class ProbeError(Exception):
    """The server answered, but not with what a ready server says."""


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ProbeError("truncated response body")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def byte(self):
        return self.take(1)[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def string(self):
        return self.take(self.short()).decode("utf-8", "replace")

    def bytes(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def option(self):
        # [option] = type id + extra data for the composite and custom types.
        type_id = self.short()
        if type_id == 0x0000:  # custom: class name
            self.string()
        elif type_id in (0x0020, 0x0022):  # list, set
            self.option()
        elif type_id == 0x0021:  # map
            self.option()
            self.option()
        elif type_id == 0x0030:  # UDT
            self.string()
            self.string()
            for _ in range(self.short()):
                self.string()
                self.option()
        elif type_id == 0x0031:  # tuple
            for _ in range(self.short()):
                self.option()
        return type_id


def frame(stream, opcode, body):
    return struct.pack(">BBhBi", VERSION_REQUEST, 0, stream, opcode, len(body)) + body


def string_map(entries):
    out = struct.pack(">H", len(entries))
    for key, value in entries.items():
        for s in (key, value):
            raw = s.encode("utf-8")
            out += struct.pack(">H", len(raw)) + raw
    return out


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by server")
        buf += chunk
    return buf


def request(sock, stream, opcode, body):
    sock.sendall(frame(stream, opcode, body))
    while True:
        _version, _flags, got_stream, got_op, length = struct.unpack(
            ">BBhBi", recv_exact(sock, 9))
        payload = recv_exact(sock, length)
        if got_stream == stream:
            break  # skip server events (stream -1), if any
    if got_op == OP_ERROR:
        r = Reader(payload)
        code = r.int()
        raise ProbeError("server error 0x%04x: %s" % (code, r.string()))
    return got_op, payload


def release_version(host, port, timeout):
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        op, _ = request(sock, 1, OP_STARTUP, string_map({"CQL_VERSION": "3.0.0"}))
        if op != OP_READY:
            raise ProbeError("STARTUP answered with opcode 0x%02x, not READY" % op)

        query = QUERY.encode("utf-8")
        # <long string query><consistency><flags=0: no values, default paging>
        body = struct.pack(">i", len(query)) + query + struct.pack(">HB", CONSISTENCY_ONE, 0)
        op, payload = request(sock, 2, OP_QUERY, body)
        if op != OP_RESULT:
            raise ProbeError("QUERY answered with opcode 0x%02x, not RESULT" % op)

        r = Reader(payload)
        kind = r.int()
        if kind != RESULT_ROWS:
            raise ProbeError("RESULT kind %d, expected ROWS" % kind)
        flags = r.int()
        columns = r.int()
        if flags & 0x0002:  # has_more_pages: paging state follows
            r.bytes()
        if not flags & 0x0004:  # metadata present
            global_spec = flags & 0x0001
            if global_spec:
                r.string()
                r.string()
            for _ in range(columns):
                if not global_spec:
                    r.string()
                    r.string()
                r.string()
                r.option()
        rows = r.int()
        if rows < 1 or columns < 1:
            raise ProbeError("system.local returned no rows")
        value = r.bytes()
        if value is None:
            raise ProbeError("release_version is null")
        return value.decode("utf-8", "replace")


def simple_query(sock, stream, cql):
    """Runs one unprepared statement at consistency ONE; returns the payload."""
    q = cql.encode("utf-8")
    body = struct.pack(">i", len(q)) + q + struct.pack(">HB", CONSISTENCY_ONE, 0)
    return request(sock, stream, OP_QUERY, body)


def drop_test_keyspaces(host, port, timeout, prefix):
    """Drops keyspaces whose names start with `prefix` (per-test keyspaces
    left behind by a crashed or killed test run), so the node's schema does
    not grow run after run. Returns how many were dropped."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(max(timeout, 60.0))
        op, _ = request(sock, 1, OP_STARTUP, string_map({"CQL_VERSION": "3.0.0"}))
        if op != OP_READY:
            raise ProbeError("STARTUP answered with opcode 0x%02x, not READY" % op)
        op, payload = simple_query(sock, 2, "SELECT keyspace_name FROM system_schema.keyspaces")
        r = Reader(payload)
        if r.int() != RESULT_ROWS:
            raise ProbeError("keyspace listing did not return rows")
        flags = r.int()
        columns = r.int()
        if flags & 0x0002:
            r.bytes()
        if not flags & 0x0004:
            global_spec = flags & 0x0001
            if global_spec:
                r.string()
                r.string()
            for _ in range(columns):
                if not global_spec:
                    r.string()
                    r.string()
                r.string()
                r.option()
        names = []
        for _ in range(r.int()):
            v = r.bytes()
            if v is not None:
                names.append(v.decode("utf-8", "replace"))
        dropped = 0
        for i, name in enumerate(n for n in names if n.startswith(prefix)):
            if all(c.isalnum() or c == "_" for c in name):
                simple_query(sock, 3 + i % 1000, "DROP KEYSPACE IF EXISTS %s" % name)
                dropped += 1
        return dropped


def main(argv):
    parser = argparse.ArgumentParser(description="Ask a CQL server for its release_version.")
    parser.add_argument("host", nargs="?", default="127.0.0.1")
    parser.add_argument("port", nargs="?", type=int, default=9042)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per socket operation")
    parser.add_argument("--drop-keyspaces-with-prefix", metavar="PREFIX",
                        help="drop every keyspace whose name starts with PREFIX (test leftovers)")
    args = parser.parse_args(argv)
    try:
        if args.drop_keyspaces_with_prefix:
            if len(args.drop_keyspaces_with_prefix) < 3:
                raise ProbeError("refusing a prefix shorter than 3 characters")
            n = drop_test_keyspaces(args.host, args.port, args.timeout, args.drop_keyspaces_with_prefix)
            print("dropped %d keyspace(s) starting with %s" % (n, args.drop_keyspaces_with_prefix))
            return 0
        print(release_version(args.host, args.port, args.timeout))
        return 0
    except ProbeError as e:
        print("cql_ping: %s:%d: %s" % (args.host, args.port, e), file=sys.stderr)
        return 2
    except OSError as e:  # refused, reset, timed out, closed early
        print("cql_ping: %s:%d: %s" % (args.host, args.port, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
