#!/usr/bin/env python3
"""Runs one CRI exec URL with the Python `kubernetes` package's own WebSocket client (the client
`kubectl`-like Python tools use), and prints what it saw as JSON: stdout, stderr, exit code.

usage: k8s_ws_exec.py URL [STDIN_TEXT]
"""
import json
import sys

from kubernetes.client import Configuration
from kubernetes.stream.ws_client import WSClient, get_websocket_url


def main():
    url = sys.argv[1]
    stdin = sys.argv[2] if len(sys.argv) > 2 else None
    # As the package's own websocket_call does: http(s) URLs become ws(s).
    client = WSClient(Configuration(), get_websocket_url(url), headers=None, capture_all=True)
    if stdin is not None:
        client.write_stdin(stdin)
    client.run_forever(timeout=30)
    out = {
        "stdout": client.read_stdout(),
        "stderr": client.read_stderr(),
        "exit_code": client.returncode,
        "subprotocol": client.subprotocol,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
