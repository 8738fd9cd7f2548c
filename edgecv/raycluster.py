"""One road to a Ray cluster for the commands that scale out (`edgecv batch`, `edgecv run --ray`):
a local Ray started by the command itself (the default) or an existing cluster (`--address` or
RAY_ADDRESS), with the settings measured on the dev box (../shared/TOOLCHAIN.md) applied first.

Ray is the optional [cluster] extra: it is imported only inside `connect()`, so the edge install
never needs it, and a missing Ray surfaces as ModuleNotFoundError('ray'), which the CLI turns into
"install it with: pip install 'edgecv[cluster]'".
"""
from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import urlparse

from .errors import ConfigError

log = logging.getLogger(__name__)

# How long an address may take to accept a TCP connection before the command gives up (seconds).
CONNECT_TIMEOUT_S = 3.0
DEFAULT_GCS_PORT = 6379
DEFAULT_CLIENT_PORT = 10001


class ClusterError(ConfigError):
    """A Ray cluster that cannot be reached or started."""

    exit_code = 1


@dataclass
class Cluster:
    """What the command got: where, how many CPUs/GPUs in all, and what starting it cost."""

    address: str            # "local" for a Ray started here
    cpus: int
    gpus: int
    nodes: int
    startup_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "cpus": self.cpus, "gpus": self.gpus, "nodes": self.nodes,
                "startup_s": round(self.startup_s, 3)}


def address_from(arg: str | None) -> str | None:
    """The cluster to join: --address, else RAY_ADDRESS, else None (start a local Ray here)."""
    value = arg if arg else os.environ.get("RAY_ADDRESS") or None
    if value is not None and not value.strip():
        return None
    return value.strip() if value else None


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) to probe for an address, or None when the address is not a network one ("auto")."""
    if address in ("auto", "local"):
        return None
    if "://" in address:
        u = urlparse(address)
        if u.scheme not in ("ray", "http", "https"):
            raise ClusterError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT, auto or local")
        try:
            port = u.port
        except ValueError:
            raise ClusterError(f"--address {address!r}: the port is not a number") from None
        default = DEFAULT_CLIENT_PORT if u.scheme == "ray" else (443 if u.scheme == "https" else 80)
        return (u.hostname or "", port or default)
    host, sep, port = address.rpartition(":")
    if not sep:
        return (address, DEFAULT_GCS_PORT)
    try:
        return (host.strip("[]"), int(port))
    except ValueError:
        raise ClusterError(f"--address {address!r}: the port is not a number") from None


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse, within `timeout` seconds, an address nothing listens on. Ray itself retries a missing
    head for a minute or more before it fails, with a page of log lines; a command should say it in
    one line and exit."""
    hp = _host_port(address)
    if hp is None:
        return
    host, port = hp
    if not host:
        raise ClusterError(f"--address {address!r}: no host")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.timeout:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: no answer within {timeout:g} s") from None
    except OSError as e:
        why = e.strerror or str(e)
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {why}") from None
    if "://" not in address:
        _check_gcs(address, host, port, timeout)


def _auth_token() -> str | None:
    """The token a Ray client sends: RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _check_gcs(address: str, host: str, port: int, timeout: float) -> None:
    """Ask the address what a Ray head answers first (GCS GetClusterId) with a deadline. Something
    that accepts TCP but is not Ray (a proxy, a web server) would otherwise keep ray.init retrying
    for 20 s with a page of log lines."""
    try:
        import grpc  # comes with Ray
    except ModuleNotFoundError:
        return
    token = _auth_token()
    metadata = (("authorization", "Bearer " + token),) if token else ()
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId", request_serializer=None,
                                   response_deserializer=None)
        try:
            call(b"", timeout=timeout, metadata=metadata)
            return
        except grpc.RpcError as e:
            code = e.code()
            details = (e.details() or "").strip().splitlines()
            detail = details[0] if details else str(code)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        raise ClusterError(f"the Ray cluster at {address} refused this client's token (set RAY_AUTH_TOKEN, "
                           "or RAY_AUTH_TOKEN_PATH, to the cluster's token)")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: no answer within {timeout:g} s")
    if code == grpc.StatusCode.UNAVAILABLE:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {detail}")
    raise ClusterError(f"{address} answers, but not as a Ray cluster head ({detail})")


def _quiet_env(local: bool) -> None:
    """Settings every Ray process of this command inherits (TOOLCHAIN.md):
    usage statistics off unless the user set RAY_USAGE_STATS_ENABLED (Ray otherwise tries to send
    them off the machine); for a local Ray, token authentication with a fresh per-run token held in
    the environment (nothing written to ~/.ray), since Ray's GCS listens on every interface."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local and "RAY_AUTH_TOKEN" not in os.environ and "RAY_AUTH_TOKEN_PATH" not in os.environ:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        if os.environ["RAY_AUTH_MODE"] == "token":
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    # Ray Data and Train print progress bars and warnings of their own on the driver: keep them quiet.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")


def require_ray() -> None:
    """ModuleNotFoundError('ray') when the [cluster] extra is missing (edgecv.cli names the extra),
    without importing Ray: Ray reads its authentication settings at import, so it is imported only
    in connect(), after they are set."""
    if "ray" in sys.modules:
        if sys.modules["ray"] is None:
            raise ModuleNotFoundError("No module named 'ray'", name="ray")
        return
    if importlib.util.find_spec("ray") is None:
        raise ModuleNotFoundError("No module named 'ray'", name="ray")


def import_ray():
    """`import ray` with the environment set first; ModuleNotFoundError('ray') when the [cluster]
    extra is missing (edgecv.cli names the extra)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray  # noqa: F401  (ModuleNotFoundError here names the extra)

    return ray


@contextmanager
def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None,
            runtime_env: dict[str, Any] | None = None) -> Iterator[Cluster]:
    """Join `address` (or RAY_ADDRESS), or start a local Ray with `num_cpus` CPUs when there is none;
    shut it down at the end. Never `ray stop` (it kills Ray processes machine-wide by name): a
    local Ray started here ends with ray.shutdown() and its per-run temporary folder is removed."""
    address = address_from(address)
    local = address is None or address == "local"
    if not local:
        check_reachable(address)  # before Ray is even imported: an unreachable address costs seconds
    _quiet_env(local)
    ray = import_ray()
    if ray.is_initialized():
        raise ClusterError("Ray is already initialised in this process")
    t0 = time.monotonic()
    temp_dir = None
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True,
                              "logging_level": logging.WARNING}
    if runtime_env:
        kwargs["runtime_env"] = runtime_env
    if local:
        # A per-run folder: `ray.init()` with no address may attach to a stale /tmp/ray session and
        # hang, and session folders would pile up in /tmp/ray (TOOLCHAIN.md). Unix socket paths are
        # limited to 107 bytes, so it lives directly under the system temporary folder.
        base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
        sweep_stale_temp_dirs(base)
        temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=base)
        with open(os.path.join(temp_dir, OWNER_FILE), "w") as f:
            f.write(str(os.getpid()))
        kwargs.update(address="local", _temp_dir=temp_dir, num_cpus=num_cpus, num_gpus=num_gpus)
        if os.environ.get("EDGECV_RAY_OBJECT_STORE_MB"):
            kwargs["object_store_memory"] = int(os.environ["EDGECV_RAY_OBJECT_STORE_MB"]) * 2**20
    else:
        kwargs["address"] = address
    try:
        try:
            ray.init(**kwargs)
        except ConnectionError as e:
            raise ClusterError(f"cannot join the Ray cluster at {address}: {_first_line(e)}") from None
        except (RuntimeError, ValueError) as e:
            where = "start a local Ray" if local else f"join the Ray cluster at {address}"
            raise ClusterError(f"cannot {where}: {_first_line(e)}") from None
        res = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        cluster = Cluster("local" if local else address, int(res.get("CPU", 0)), int(res.get("GPU", 0)), nodes,
                          time.monotonic() - t0)
        log.debug("ray: %s", cluster.to_dict())
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


TEMP_PREFIX = "edgecv-ray-"
OWNER_FILE = "edgecv-owner.pid"
STALE_AFTER_S = 300  # a killed command's Ray agents outlive it by a minute or two


def sweep_stale_temp_dirs(base: str) -> list[str]:
    """Remove the per-run Ray folders of commands that were killed (their owner process is gone and
    the folder has not changed for STALE_AFTER_S): a SIGKILL leaves the folder behind."""
    removed = []
    try:
        names = [n for n in os.listdir(base) if n.startswith(TEMP_PREFIX)]
    except OSError:
        return removed
    for name in names:
        folder = os.path.join(base, name)
        try:
            with open(os.path.join(folder, OWNER_FILE)) as f:
                pid = int(f.read().strip() or 0)
            age = time.time() - os.stat(folder).st_mtime
        except (OSError, ValueError):
            continue  # not ours, or being created
        if pid <= 0 or age < STALE_AFTER_S:
            continue
        try:
            os.kill(pid, 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__



# --- files the nodes may not have -------------------------------------------------------------------
@dataclass(frozen=True)
class ShippedFile:
    """A small file the workers need (the model, YuNet's weights) with its bytes in Ray's object
    store: a node that has the file at `path` with the same SHA-256 uses it, any other node gets a
    copy in its temporary folder. So a cluster needs a shared filesystem for the inputs only."""

    path: str
    sha256: str
    data: Any   # an ObjectRef of the bytes (ray.put on the driver)


def ship(path: str | os.PathLike) -> ShippedFile:
    """On the driver, inside connect(): the file's bytes into the object store, once."""
    import hashlib

    import ray

    with open(path, "rb") as f:
        data = f.read()
    return ShippedFile(str(path), hashlib.sha256(data).hexdigest(), ray.put(data))


_local: dict[str, str] = {}


def local_path(f: ShippedFile, fetch=None) -> str:
    """On a worker: a path to the file's exact bytes on this node (the original when it matches, else
    a copy under <tmp>/edgecv-shipped/<sha256>/, written once per node). fetch() returns the bytes
    (default: ray.get of the shipped reference)."""
    import hashlib

    if f.sha256 in _local:
        return _local[f.sha256]
    try:
        with open(f.path, "rb") as fh:
            same = hashlib.sha256(fh.read()).hexdigest() == f.sha256
    except OSError:
        same = False
    if same:
        _local[f.sha256] = f.path
        return f.path
    folder = os.path.join(tempfile.gettempdir(), "edgecv-shipped", f.sha256)
    target = os.path.join(folder, os.path.basename(f.path))
    if not os.path.isfile(target):
        if fetch is None:
            import ray

            def fetch():
                return ray.get(f.data)
        data = fetch()
        if hashlib.sha256(data).hexdigest() != f.sha256:
            raise ClusterError(f"{f.path}: the copy received does not match its SHA-256")
        os.makedirs(folder, exist_ok=True)
        tmp = f"{target}.{os.getpid()}.part"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)  # several workers of one node may race here: each writes whole bytes
    _local[f.sha256] = target
    return target
