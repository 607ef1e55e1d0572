"""Remote devices through TVM RPC: sessions from a tracker, retries when a device drops, and a loopback
tracker + server (TVM's own, bound to 127.0.0.1 only) for tests and local rehearsal.

Example:
    >>> with loopback_cluster(key="jetson") as cluster:
    ...     target = get_target("cpu", "tvm", rpc=cluster.endpoint)
    ...     runner = with_retries(lambda: target.prepare(model, x), cluster.endpoint, "compile+upload")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from toolchain.errors import ToolchainError
from toolchain.targets import RpcEndpoint
from toolchain.targets.backends.tvm_backend import drop_remote_session

LOOPBACK_HOST = "127.0.0.1"
T = TypeVar("T")


class DeviceLostError(ToolchainError):
    """A remote device stopped answering and retries did not bring it back."""


def with_retries(
    action: Callable[[], T],
    endpoint: RpcEndpoint,
    what: str,
    attempts: int = 3,
    wait_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `action`, reconnecting and retrying when the device fails; DeviceLostError after `attempts`."""
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except ToolchainError:
            raise
        except Exception as error:  # noqa: BLE001 - any RPC/socket/TVM failure means the device misbehaved
            last_error = error
            drop_remote_session(endpoint)
            if attempt < attempts:
                sleep(wait_s * attempt)
    first_line = str(last_error).strip().splitlines()[0] if str(last_error).strip() else type(last_error).__name__
    raise DeviceLostError(
        f"device {endpoint.key!r} via tracker {endpoint.tracker_host}:{endpoint.tracker_port} "
        f"failed {attempts} times during {what}: {first_line}"
    )


@dataclass
class LoopbackCluster:
    """A running loopback tracker + device servers; `stop_device(i)` makes device i disappear."""

    endpoint: RpcEndpoint
    servers: list

    @property
    def addresses(self) -> list[str]:
        """Each device server's address as the tracker hands it out ("127.0.0.1:PORT")."""
        return [f"{LOOPBACK_HOST}:{server.port}" for server in self.servers]

    def stop_device(self, index: int = 0) -> None:
        self.servers[index].terminate()


@contextmanager
def loopback_cluster(key: str = "loopback", tracker_port: int = 9190, devices: int = 1) -> Iterator[LoopbackCluster]:
    """A TVM RPC tracker and `devices` servers registered under `key`, all on 127.0.0.1, stopped on exit.

    Several servers are a loopback device farm: each is a board to the tracker (they share this machine's CPU).
    """
    from tvm.rpc.server import Server
    from tvm.rpc.tracker import Tracker

    if devices < 1:
        raise ToolchainError(f"a loopback farm needs at least 1 device, got {devices}")
    tracker = Tracker(host=LOOPBACK_HOST, port=tracker_port, port_end=tracker_port + 200, silent=True)
    servers: list = []
    endpoint = RpcEndpoint(LOOPBACK_HOST, tracker.port, key)
    try:
        for _ in range(devices):
            servers.append(Server(
                host=LOOPBACK_HOST,
                port=tracker.port + 201,
                port_end=tracker.port + 400,
                tracker_addr=(LOOPBACK_HOST, tracker.port),
                key=key,
                silent=True,
            ))
        _wait_until_registered(endpoint, devices)
        yield LoopbackCluster(endpoint, servers)
    finally:
        drop_remote_session(endpoint)
        for server in servers:
            server.terminate()
        tracker.terminate()


def _wait_until_registered(endpoint: RpcEndpoint, devices: int = 1, wait_s: float = 20.0) -> None:
    from tvm import rpc

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            tracker = rpc.connect_tracker(endpoint.tracker_host, endpoint.tracker_port)
            if tracker.summary().get("queue_info", {}).get(endpoint.key, {}).get("free", 0) >= devices:
                return
        except (ConnectionError, OSError, RuntimeError):
            pass
        time.sleep(0.2)
    raise ToolchainError(f"{devices} RPC server(s) with key {endpoint.key!r} did not register with the tracker "
                         f"in {wait_s} s")


def tracker_unreachable_reason(endpoint: RpcEndpoint, timeout_s: float = 3.0) -> str | None:
    """None when the tracker accepts a TCP connection, else why not (fast: TVM's own connect retries ~60 s)."""
    import socket

    try:
        with socket.create_connection((endpoint.tracker_host, endpoint.tracker_port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"tracker {endpoint.tracker_host}:{endpoint.tracker_port} is unreachable ({exc.strerror or exc})"


def parse_tracker(address: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port) with a clear error."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ToolchainError(f"--rpc-tracker must be HOST:PORT, got {address!r}")
    return host, int(port)


class Terminated(BaseException):
    """SIGTERM, raised where the main thread is so that `loopback_cluster` stops its tracker and server.

    Without it SIGTERM ends the process at once and the two children live on (parent pid 1), still listening.
    A BaseException, so that no `except Exception` on the way swallows it.
    """


def _raise_terminated(signum, _frame) -> None:
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    """`python -m toolchain.latency.rpc --key K [--port P] [--devices N]`: a loopback tracker and N device servers
    on this machine, for rehearsing `make deploy RPC_TRACKER=127.0.0.1:P RPC_KEY=K` or a farm campaign without a
    board (Ctrl-C stops)."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--key", default="loopback")
    parser.add_argument("--port", type=int, default=9190, help="first tracker port to try")
    parser.add_argument("--devices", type=int, default=1, help="device servers under the key (a loopback farm)")
    args = parser.parse_args(argv)
    previous_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    ready = False
    try:
        with loopback_cluster(key=args.key, tracker_port=args.port, devices=args.devices) as cluster:
            endpoint = cluster.endpoint
            ready = True
            print(f"tracker {endpoint.tracker_host}:{endpoint.tracker_port}, device key {endpoint.key!r}, "
                  f"{args.devices} device server(s) (this machine's CPU); Ctrl-C stops", flush=True)
            while True:
                time.sleep(3600)
    except (KeyboardInterrupt, Terminated) as stop:
        # The cluster's children are stopped by now (loopback_cluster's finally). Stopping a running cluster is
        # the normal way to end it; stopping it while it starts is reported on one line.
        if not ready:
            print("error: stopped while the tracker and device server were starting; nothing left running",
                  file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else (0 if ready else 130)
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
