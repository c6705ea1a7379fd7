"""A RabbitMQ cluster of its own on this machine, for tests and by hand.

Every node runs the installed RabbitMQ under its own name, ports, config file, enabled
plugins file, data, logs and pid file, all under one base directory, and with an Erlang
cookie of its own: the machine's broker (rabbit@localhost on 5672) and its files are
never read, written or reached (the nodes share only epmd on 4369, as every Erlang
node on a machine does). The cookie is what makes that sure: a CLI call that named the
machine's node by mistake could not authenticate to it.

    cluster = Cluster(base_port=5681).up()     # b24c5681, b24c5682, b24c5683 @localhost
    cluster.urls                               # each node's AMQP URL (cluster.url: joined)
    cluster.stop_node(cluster.leader_of("q"))  # a quorum queue's leader, gracefully
    cluster.start_node(i)                      # back in the cluster, accepting AMQP
    cluster.down()                             # every process gone, every file removed

By hand (the nodes outlive the command; `down` finds them by the base directory):

    python -m tests.cluster.harness up [--base-port 5681] [--size 3]
    python -m tests.cluster.harness status
    python -m tests.cluster.harness down

Node i (0-based, as in `urls`) is `b24c<port>@localhost` on 127.0.0.1:<base_port + i>,
with Erlang distribution on <port + 20000>. The first node starts alone; the others
start together and join it through classic-config peer discovery on their first boot,
so no node is restarted to form the cluster. On Debian the scripts in
/usr/lib/rabbitmq/bin are run directly as the `rabbitmq` user: the /usr/sbin wrappers
would take HOME (and with it the cookie) from /var/lib/rabbitmq and write the server's
output to /var/log/rabbitmq, both the machine broker's.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from scripts.amqp_ping import answers

__all__ = ["Cluster", "ClusterError", "installed"]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_BASE_PORT = 5681
DEFAULT_SIZE = 3
DIST_PORT_OFFSET = 20000  # RabbitMQ's own default: the AMQP port + 20000
# The sharded topology's exchange type (worker/amqp/topology.py): SHARDS > 0 needs it.
PLUGINS = ("rabbitmq_consistent_hash_exchange",)
# Every process the harness starts, and every process those start, carries this
# variable (set to the base directory) in its environment: down() finds them by it.
MARKER = "B24_CLUSTER_HARNESS"
STATE_FILE = "cluster.json"
TOOLS = frozenset({"rabbitmqctl", "rabbitmq-queues", "rabbitmq-diagnostics", "rabbitmq-plugins"})
_DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")
_RUN_USER = "rabbitmq"


class ClusterError(RuntimeError):
    """The cluster could not be started, reached or stopped; the message says why."""


def _bin_dir(explicit: str | Path | None = None) -> Path | None:
    if explicit is not None:
        return Path(explicit)
    if (_DEBIAN_BIN / "rabbitmq-server").is_file():
        return _DEBIAN_BIN
    found = shutil.which("rabbitmq-server")
    return Path(found).resolve().parent if found else None


def installed() -> bool:
    """Whether RabbitMQ's server scripts are on this machine."""
    return _bin_dir() is not None


def default_base_dir(base_port: int = DEFAULT_BASE_PORT) -> Path:
    """Where a cluster on `base_port` lives unless told otherwise: the CLI's `up` and
    `down` meet there."""
    return Path(tempfile.gettempdir()) / f"b24-cluster-{base_port}"


def _port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (a server's TIME_WAIT leftovers do not count:
    RabbitMQ binds with SO_REUSEADDR as this check does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class _User:
    """The OS user the nodes run as: `rabbitmq` when this process is root and that user
    exists (the data then belongs to it, as the machine broker's does), else this one."""

    uid: int
    gid: int
    name: str

    @classmethod
    def for_nodes(cls) -> _User | None:
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(_RUN_USER)
        except KeyError:
            return None
        return cls(entry.pw_uid, entry.pw_gid, entry.pw_name)


@dataclass(frozen=True)
class _Node:
    index: int
    name: str
    port: int
    dist_port: int
    dir: Path

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/"

    @property
    def pid_file(self) -> Path:
        return self.dir / "rabbitmq.pid"

    @property
    def output(self) -> Path:
        return self.dir / "output.log"

    def os_pid(self) -> int | None:
        """The Erlang VM's pid, which RabbitMQ writes into its pid file as it boots."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def output_tail(self, lines: int = 25) -> str:
        try:
            text = self.output.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """`size` RabbitMQ nodes clustered on this machine, on base_port, base_port + 1, ...

    Synchronous throughout; from async code call it through asyncio.to_thread. Node
    indexes are 0-based and match `urls`. `timings` holds how long each step took (s).
    """

    def __init__(
        self,
        base_dir: str | Path | None = None,
        base_port: int = DEFAULT_BASE_PORT,
        *,
        size: int = DEFAULT_SIZE,
        bin_dir: str | Path | None = None,
        boot_timeout_s: float = 90.0,
        at_exit: bool = True,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        if not 1024 <= base_port <= 65535 - DIST_PORT_OFFSET - size + 1:
            raise ValueError(f"base_port {base_port} leaves no room for the nodes' ports")
        self.base_dir = (Path(base_dir) if base_dir else default_base_dir(base_port)).absolute()
        self.base_port = base_port
        self.size = size
        self.boot_timeout_s = boot_timeout_s
        self.timings: dict[str, float] = {}
        self._bin = _bin_dir(bin_dir)
        self._user = _User.for_nodes()
        self._at_exit = at_exit
        self._registered = False
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._nodes = [
            _Node(
                index=i,
                name=f"b24c{base_port + i}@localhost",
                port=base_port + i,
                dist_port=base_port + i + DIST_PORT_OFFSET,
                dir=self.base_dir / f"node{i}",
            )
            for i in range(size)
        ]

    @classmethod
    def attach(cls, base_dir: str | Path, **kwargs: Any) -> Cluster:
        """The cluster a earlier `up()` (another process's, e.g. the CLI's) left in
        `base_dir`: stop, start, inspect or `down()` it from here."""
        state = json.loads((Path(base_dir) / STATE_FILE).read_text())
        kwargs.setdefault("at_exit", False)
        return cls(base_dir, state["base_port"], size=state["size"], **kwargs)

    # -- what it is

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self._nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-joined, for a client that takes several. The worker's
        AMQP_URL takes one: give it one of `urls`."""
        return ",".join(self.urls)

    @property
    def names(self) -> list[str]:
        return [node.name for node in self._nodes]

    def name(self, i: int) -> str:
        return self._node(i).name

    def node_of_port(self, port: int) -> int:
        for node in self._nodes:
            if node.port == port:
                return node.index
        raise KeyError(f"no node of this cluster listens on {port}")

    def node_of_name(self, name: str) -> int:
        for node in self._nodes:
            if node.name == name:
                return node.index
        raise KeyError(f"{name} is not a node of this cluster")

    def running(self) -> list[int]:
        """The nodes whose Erlang VM runs (booting, stopping or serving)."""
        return [node.index for node in self._nodes if self._vm_alive(node)]

    def processes(self) -> list[int]:
        """Every live process this cluster started, and those they started: the nodes'
        VMs, their wrapper shells and port programs, CLI calls in flight."""
        wanted = f"{MARKER}={self.base_dir}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z" and wanted in environ.split(b"\0"):
                found.append(int(entry.name))
        return sorted(found)

    # -- starting and stopping the whole cluster

    def up(self) -> Cluster:
        """Start every node, the first alone, then the rest joining it; return once
        cluster_status on the first node shows them all running and each one answers
        AMQP. Whatever fails on the way stops what was started (ClusterError)."""
        started = time.monotonic()
        self._check()  # changes nothing: what it finds running is not this call's to stop
        try:
            self._write_files()
            self._timed("boot " + self.name(0), lambda: self._boot([0]))
            rest = list(range(1, self.size))
            if rest:
                self._timed("boot and join the others", lambda: self._boot(rest))
            self._timed("cluster formed", lambda: self._await_members(0, range(self.size)))
        except BaseException:
            self.down()
            raise
        self.timings["up"] = time.monotonic() - started
        log.info("cluster up in %.1f s: %s", self.timings["up"], self.url)
        return self

    def down(self) -> None:
        """Kill every node and every process it left, then remove the base directory's
        contents. Safe to call twice, and on a cluster that never came up."""
        started = time.monotonic()
        for node in self._nodes:
            self._kill(node)
        leftovers = self.processes()
        for pid in leftovers:
            if self._is_epmd(pid) and not self._epmd_empty():
                continue  # an epmd a node of ours started, which other nodes now use too
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._await(lambda: not self._killable_leftovers(), 10.0, "the cluster's processes end")
        self._remove_files()
        if self._registered:
            atexit.unregister(self.down)
            self._registered = False
        self.timings["down"] = time.monotonic() - started

    def __enter__(self) -> Cluster:
        return self.up()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.down()

    # -- one node

    def stop_node(self, i: int) -> None:
        """Stop node i gracefully (`rabbitmqctl shutdown`, which returns once the VM
        has exited)."""
        node = self._node(i)
        started = time.monotonic()
        self.rabbitmqctl(i, "shutdown", "--timeout", str(int(self.boot_timeout_s)))
        self._reap(node, 30.0)
        self._await(lambda: _port_free(node.port), 30.0, f"{node.name} let go of its port")
        self.timings[f"stop {node.name}"] = time.monotonic() - started

    def kill_node(self, i: int) -> None:
        """Kill node i's Erlang VM (SIGKILL by its pid): a crash, nothing flushed."""
        node = self._node(i)
        if not self._vm_alive(node):
            raise ClusterError(f"{node.name} is not running")
        started = time.monotonic()
        self._kill(node)
        self._await(lambda: _port_free(node.port), 30.0, f"{node.name} let go of its port")
        self.timings[f"kill {node.name}"] = time.monotonic() - started

    def start_node(self, i: int) -> None:
        """Start node i again (after stop_node or kill_node); return once it answers
        AMQP and sees every other running node as a running cluster member."""
        node = self._node(i)
        if self._vm_alive(node):
            raise ClusterError(f"{node.name} is already running")
        started = time.monotonic()
        self._boot([i])
        self._await_members(i, self.running())
        self.timings[f"start {node.name}"] = time.monotonic() - started

    # -- asking the nodes

    def rabbitmqctl(self, i: int, *args: str, timeout_s: float = 90.0) -> str:
        """`rabbitmqctl -n <node i> args...`; its output, or ClusterError."""
        return self.cli(i, "rabbitmqctl", *args, timeout_s=timeout_s)

    def cli(self, i: int, tool: str, *args: str, timeout_s: float = 90.0) -> str:
        """One of RabbitMQ's CLI tools against node i, always with `-n` and this
        cluster's cookie (it could not reach another node if it tried)."""
        if tool not in TOOLS:
            raise ValueError(f"{tool} is not one of {sorted(TOOLS)}")
        if any(arg in ("-n", "--node") or arg.startswith("--node=") for arg in args):
            raise ValueError("the node is chosen by its index, not by -n")
        node = self._node(i)
        command = [str(self._tool(tool)), "-n", node.name, *args]
        try:
            done: subprocess.CompletedProcess[str] = subprocess.run(
                command,
                env=self._env(node),
                cwd=self.base_dir,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                **self._as_user(),
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"{tool} {' '.join(args)} on {node.name}: no answer") from exc
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-5:]
            raise ClusterError(f"{tool} {' '.join(args)} on {node.name}: {' / '.join(said)}")
        return done.stdout.strip()

    def cluster_status(self, i: int = 0) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(
            self.rabbitmqctl(i, "cluster_status", "--formatter", "json")
        )
        return status

    def queues(self, i: int | None = None, vhost: str = "/") -> list[dict[str, Any]]:
        """list_queues' name, type, leader, members and online nodes, asked of node i
        (the first running node by default)."""
        asked = self._a_running_node() if i is None else i
        columns = ("name", "type", "leader", "members", "online")
        rows: list[dict[str, Any]] = json.loads(
            self.rabbitmqctl(asked, "list_queues", "-p", vhost, "--formatter", "json", *columns)
        )
        return rows

    def messages(self, vhost: str = "/") -> dict[str, int]:
        """Each queue's messages, ready and unacknowledged."""
        rows: list[dict[str, Any]] = json.loads(
            self.rabbitmqctl(
                self._a_running_node(),
                *("list_queues", "-p", vhost, "--formatter", "json", "name", "messages"),
            )
        )
        return {str(row["name"]): int(row.get("messages") or 0) for row in rows}

    def leader_of(self, queue: str, vhost: str = "/", timeout_s: float = 30.0) -> int:
        """The node that leads quorum queue `queue`: once a running node leads it (just
        after a leader stopped, the others may still be electing the next one)."""
        found: list[int] = []

        def led() -> bool:
            try:
                row = self._queue(queue, vhost)
            except ClusterError:
                # Declared a moment ago, the queue was once missing from the listing
                # of a cluster that had just formed: wait for it as for a leader.
                return False
            leader = row.get("leader")
            if isinstance(leader, str) and leader in self.names:
                index = self.node_of_name(leader)
                if index in self.running():
                    found[:] = [index]
                    return True
            return False

        self._await(led, timeout_s, f"a running node leads {queue}")
        return found[0]

    def members_of(self, queue: str, vhost: str = "/", *, online: bool = False) -> list[int]:
        """The nodes that hold a replica of quorum queue `queue` (online ones only, if
        asked)."""
        row = self._queue(queue, vhost)
        names = row.get("online" if online else "members") or []
        return sorted(self.node_of_name(name) for name in names if name in self.names)

    # -- inside

    def _node(self, i: int) -> _Node:
        if not 0 <= i < self.size:
            raise IndexError(f"node {i}: this cluster has nodes 0..{self.size - 1}")
        return self._nodes[i]

    def _tool(self, name: str) -> Path:
        if self._bin is None:
            raise ClusterError("RabbitMQ is not installed on this machine (no rabbitmq-server)")
        return self._bin / name

    def _as_user(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.uid, "group": self._user.gid, "extra_groups": []}

    def _env(self, node: _Node) -> dict[str, str]:
        """The node's whole environment: nothing of this process's (a RABBITMQ_* or
        ERL_* variable set outside must not reach it), and nothing of the machine
        broker's: its rabbitmq-env.conf, rabbitmq.conf and enabled_plugins are all
        replaced by files of the node's own."""
        path = [str(self._bin)] if self._bin else []
        path += ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        return {
            MARKER: str(self.base_dir),
            "PATH": ":".join(path),
            "HOME": str(self.base_dir / "home"),  # .erlang.cookie: the cluster's own
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "ERL_EPMD_ADDRESS": HOST,  # only if a node has to start epmd itself
            "RABBITMQ_CONF_ENV_FILE": str(node.dir / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(node.port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_CONFIG_FILE": str(node.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(node.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.dir / "log"),
            "RABBITMQ_PID_FILE": str(node.pid_file),
            # Distribution on loopback only, as the machine broker's.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _config(self, node: _Node) -> str:
        text = (
            f"# {node.name}: written by tests/cluster/harness.py\n"
            f"listeners.tcp.1 = {HOST}:{node.port}\n"
            "disk_free_limit.absolute = 1MB\n"
            "log.file.level = info\n"
            "log.console = false\n"
        )
        if node.index == 0:
            # The seed starts alone. Given peers, it would try them ten times, 500 ms
            # apart, before starting as a cluster of one: 5 s lost on every up().
            return text
        # On its first boot a node joins the first of these that runs: the seed. Later
        # boots find the cluster in the node's own data and ignore this.
        peers = "\n".join(
            f"cluster_formation.classic_config.nodes.{n.index + 1} = {n.name}" for n in self._nodes
        )
        return text + f"cluster_formation.peer_discovery_backend = classic_config\n{peers}\n"

    def _check(self) -> None:
        """What would fail obscurely later, and a cluster already running here."""
        if self._bin is None:
            raise ClusterError(
                "RabbitMQ is not installed on this machine (no rabbitmq-server): "
                "apt-get install rabbitmq-server, or pass bin_dir"
            )
        if self.base_dir.is_symlink():
            raise ClusterError(f"{self.base_dir} is a symlink: pick a base directory of its own")
        alive = self.processes()
        if alive:
            raise ClusterError(
                f"a cluster from {self.base_dir} still runs (pids {alive}): "
                f"`python -m tests.cluster.harness down --base-dir {self.base_dir}` first"
            )
        for node in self._nodes:
            for port, what in ((node.port, "AMQP"), (node.dist_port, "Erlang distribution")):
                if not _port_free(port):
                    raise ClusterError(
                        f"port {port} on {HOST} ({what} for {node.name}) is taken: "
                        "another broker, or a cluster left running? Pick another base_port "
                        f"(the nodes need {self.base_port}..{self.base_port + self.size - 1} "
                        f"and {self.base_port + DIST_PORT_OFFSET}.."
                        f"{self.base_port + DIST_PORT_OFFSET + self.size - 1})"
                    )

    def _write_files(self) -> None:
        if self._at_exit and not self._registered:
            atexit.register(self.down)
            self._registered = True
        self._remove_files()  # what a run that died without down() left
        self.base_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        home = self.base_dir / "home"
        home.mkdir(mode=0o700)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)
        for node in self._nodes:
            for sub in ("mnesia", "log"):
                (node.dir / sub).mkdir(parents=True)
            (node.dir / "rabbitmq-env.conf").write_text("# the harness sets everything\n")
            (node.dir / "rabbitmq.conf").write_text(self._config(node))
            (node.dir / "enabled_plugins").write_text(f"[{','.join(PLUGINS)}].\n")
        (self.base_dir / STATE_FILE).write_text(
            json.dumps({"base_port": self.base_port, "size": self.size, "names": self.names})
        )
        if self._user is not None:
            for path in [self.base_dir, *self.base_dir.rglob("*")]:
                os.chown(path, self._user.uid, self._user.gid)
            reach = subprocess.run(
                ["test", "-w", str(self.base_dir), "-a", "-r", str(cookie)],
                check=False,
                **self._as_user(),
            )
            if reach.returncode != 0:
                raise ClusterError(
                    f"the {self._user.name} user cannot reach {self.base_dir}: a directory "
                    f"above it is closed to that user; pick one under {tempfile.gettempdir()}"
                )

    def _boot(self, indexes: list[int]) -> None:
        """Start these nodes together; return once each answers AMQP."""
        for i in indexes:
            self._spawn(self._nodes[i])
        deadline = time.monotonic() + self.boot_timeout_s
        for i in indexes:
            node = self._nodes[i]
            while not answers(node.url, timeout_s=1.0):
                process = self._processes.get(i)
                if process is not None and process.poll() is not None:
                    raise ClusterError(
                        f"{node.name} exited ({process.returncode}) while booting:\n"
                        + node.output_tail()
                    )
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"{node.name} does not answer AMQP on {node.port} after "
                        f"{self.boot_timeout_s:.0f} s:\n" + node.output_tail()
                    )
                time.sleep(0.2)

    def _spawn(self, node: _Node) -> None:
        node.pid_file.unlink(missing_ok=True)
        with node.output.open("ab") as output:
            self._processes[node.index] = subprocess.Popen(
                [str(self._tool("rabbitmq-server"))],
                env=self._env(node),
                cwd=node.dir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # it outlives this process when the CLI starts it
                **self._as_user(),
            )

    def _await_members(self, i: int, expected: Iterable[int]) -> None:
        wanted = {self.name(n) for n in expected}

        def formed() -> bool:
            try:
                running = set(self.cluster_status(i).get("running_nodes", []))
            except ClusterError:
                return False
            return wanted <= running

        self._await(formed, 60.0, f"{self.name(i)} sees {sorted(wanted)} running")

    def _a_running_node(self) -> int:
        for i in self.running():
            if answers(self._nodes[i].url, timeout_s=1.0):
                return i
        raise ClusterError("no node of the cluster is running")

    def _queue(self, queue: str, vhost: str) -> dict[str, Any]:
        for row in self.queues(vhost=vhost):
            if row.get("name") == queue:
                return row
        raise ClusterError(f"no queue {queue} in vhost {vhost}")

    def _owned(self, pid: int) -> bool:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        return f"{MARKER}={self.base_dir}".encode() in environ.split(b"\0")

    def _vm_alive(self, node: _Node) -> bool:
        pid = node.os_pid()
        return pid is not None and self._owned(pid) and not _zombie(pid)

    def _kill(self, node: _Node) -> None:
        """SIGKILL the node's VM by the pid it wrote (checked to be this cluster's), and
        its wrapper shell's process group; reap the wrapper if this process started it."""
        pid = node.os_pid()
        if pid is not None and self._owned(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process = self._processes.get(node.index)
        if process is not None and process.poll() is None and self._owned(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        self._reap(node, 10.0)

    def _reap(self, node: _Node, timeout_s: float) -> None:
        process = self._processes.pop(node.index, None)
        if process is not None:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired as exc:
                raise ClusterError(f"{node.name}'s wrapper (pid {process.pid}) runs on") from exc
        pid = node.os_pid()
        if pid is not None:
            self._await(lambda: not self._vm_alive(node), timeout_s, f"{node.name} exits")
            node.pid_file.unlink(missing_ok=True)

    def _killable_leftovers(self) -> list[int]:
        return [
            pid for pid in self.processes() if not (self._is_epmd(pid) and not self._epmd_empty())
        ]

    @staticmethod
    def _is_epmd(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip() == "epmd"
        except OSError:
            return False

    @staticmethod
    def _epmd_empty() -> bool:
        epmd = shutil.which("epmd")
        if epmd is None:
            return True
        done = subprocess.run(
            [epmd, "-names"], capture_output=True, text=True, timeout=10, check=False
        )
        return "name " not in done.stdout

    def _remove_files(self) -> None:
        if not self.base_dir.is_dir() or self.base_dir.is_symlink():
            return
        for node in self._nodes:
            shutil.rmtree(node.dir, ignore_errors=True)
        shutil.rmtree(self.base_dir / "home", ignore_errors=True)
        (self.base_dir / STATE_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.base_dir.rmdir()  # unless something else lives there

    def _timed(self, step: str, action: Callable[[], None]) -> None:
        started = time.monotonic()
        action()
        self.timings[step] = time.monotonic() - started
        log.info("%s: %.1f s", step, self.timings[step])

    @staticmethod
    def _await(check: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise ClusterError(f"waited {timeout_s:.0f} s for {what}")
            time.sleep(0.2)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster.harness",
        description="A RabbitMQ cluster of its own on this machine (see the module's doc).",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--base-dir", type=Path, help="default: <tmp>/b24-cluster-<base port>")
    args = parser.parse_args(argv)
    base_dir: Path = args.base_dir or default_base_dir(args.base_port)

    if args.command == "up":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        cluster = Cluster(base_dir, args.base_port, size=args.size, at_exit=False)
        try:
            cluster.up()
        except ClusterError as exc:
            print(f"cluster not started: {exc}", file=sys.stderr)
            return 1
        print(f"AMQP_URL={cluster.url}")
        print(f"up in {cluster.timings['up']:.1f} s; stop it with: {parser.prog} down", end="")
        print(f" --base-dir {base_dir}" if args.base_dir else "")
        return 0

    if (base_dir / STATE_FILE).is_file():
        cluster = Cluster.attach(base_dir)
    else:
        cluster = Cluster(base_dir, args.base_port, size=args.size, at_exit=False)
    if args.command == "down":
        cluster.down()
        print(f"down in {cluster.timings['down']:.1f} s")
        return 0
    running = cluster.running()
    for i, name in enumerate(cluster.names):
        state = "answers AMQP" if answers(cluster.urls[i], 1.0) else "does not answer"
        print(f"{i} {name} {cluster.urls[i]} {'runs' if i in running else 'down'}, {state}")
    if running:
        try:
            members = cluster.cluster_status(running[0]).get("running_nodes", [])
            print("running cluster members:", " ".join(sorted(members)))
        except ClusterError as exc:
            print(exc)
    return 0 if len(running) == cluster.size else 1


if __name__ == "__main__":
    sys.exit(main())
