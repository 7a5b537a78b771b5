"""Opens N connections to 127.0.0.1:PORT and sends `GET PATH` on each, then holds them open for
SECONDS: with MODE=answered each response is read first (idle keep-alive connections), with
MODE=waiting none is (requests suspended in the server). Prints "ready N" once all are in place,
then exits (closing them all) after SECONDS or when stdin closes.
    python3 bench/hold_connections.py PORT N PATH answered|waiting SECONDS"""
import select
import socket
import sys
import time


def main():
    port, count, path, mode, seconds = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    socks = []
    deadline = time.monotonic() + 60
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(request)
        socks.append(s)
        if mode == "answered":
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"Hello, World!"):
                chunk = s.recv(4096)
                if not chunk:
                    sys.exit("connection closed before its response")
                data += chunk
        if time.monotonic() > deadline:
            sys.exit("too slow to open the connections")
    print("ready", len(socks), flush=True)
    select.select([sys.stdin], [], [], seconds)
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
