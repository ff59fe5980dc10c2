"""What soak.py, scale.py, upgrade/compare.py and harness/sidebyside.py share: free
loopback ports, waiting for a listener, reading a socket to its end or one HTTP response,
RSS, stopping a server."""
import socket
import subprocess
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc=None, timeout=10.0):
    """True once 127.0.0.1:port accepts; False after timeout or when proc has exited."""
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def stop(proc, grace=5.0):
    """SIGTERM, then SIGKILL if proc has not exited within `grace` seconds; reaped."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def read_to_end(s):
    """Everything the peer sends on socket s until it closes; closes s."""
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    return data


def read_http_response(s, buf=b""):
    """One HTTP/1.1 response framed by Content-Length (none: no body) from socket s, buf
    holding bytes already read: (head, body, the bytes read past it). OSError when the
    peer closes first."""
    while b"\r\n\r\n" not in buf:
        b = s.recv(65536)
        if not b:
            raise OSError("connection closed early")
        buf += b
    head, _, rest = buf.partition(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":")[1])
    while len(rest) < n:
        b = s.recv(65536)
        if not b:
            raise OSError("connection closed early")
        rest += b
    return head, rest[:n], rest[n:]
