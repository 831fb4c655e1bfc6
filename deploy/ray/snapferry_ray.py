#!/usr/bin/env python3
"""snapferry_ray.py: one distributed snapferry round (plan -> units -> commit) on a Ray cluster.

    python snapferry_ray.py [--address ADDR|auto] [--snapferry PATH] [--max-retries N] \\
        [--lease-wait SECONDS] [--node-ip-address IP] \\
        -- SRC DST --units U [--control PREFIX] [sync flags: endpoints, credentials, ...]

What it does:
  1. here, on the driver's machine: `snapferry plan SRC DST --units U ... --json`, which pins
     the source's root and writes the plan beside the destination; it reads the plan's URL;
  2. one Ray task per unit (1 CPU each, SPREAD over the nodes): `snapferry sync --plan URL
     --unit I <flags>` in a subprocess that dies with its Ray worker (PR_SET_PDEATHSIG);
  3. when every unit succeeded, here: `snapferry commit --plan URL <flags>`.
<flags> are the arguments after `--` but SRC, DST, --units, --control and --json: plan, sync
--plan and commit all take the sync flags (--src-endpoint, --dst-endpoint, --progress, ...).

Exit codes of a unit (snapferry's own): 0 done; 2 bad input: failed for good, never retried;
4 the unit's lease is held by another run: the task runs snapferry again every 10 s for up to
--lease-wait seconds (default 150: a lease whose holder died on another host is taken over once
it expires, 120 s by default; on the same host at once), then as 3; 3 store unreachable or
refused credentials, or the binary killed by a signal: transient, the task raises
TransientUnitError and Ray runs it again (after a short pause), up to --max-retries times; a Ray
worker or node that dies is retried by Ray the same way. Anything else (1: copy failures) is
for good.

Output: one line per unit (`unit I: ok|FAILED exit E attempts A node IP/ID [lease-waits W]`,
the node of its last attempt, W the times it found its lease held, and the tail of snapferry's
stderr for a failed unit), then the commit's. Exit 0 only when the commit exited 0; when a
unit failed for good: no commit, exit 1, and the failed units named on stderr. The round can
be resumed by hand: `snapferry sync --plan URL --unit I` for those units, then `snapferry
commit --plan URL`.

Requirements: Ray on the driver and the nodes (the same version); the snapferry binary on every
node's PATH or at --snapferry PATH (the same path on every node); the stores' credentials in
the nodes' environment (SNAPFERRY_SRC_ACCESS_KEY_ID, ..., or the AWS chain), since tasks run
with the environment their raylet was started with, and in the driver's (plan and commit).

Test hooks (the e2e test tests/tests/ray.rs; not for operators):
  SNAPFERRY_RAY_TEST_PIDS=I:DIR  the first attempt of unit I writes `<its Ray worker's PID>
                                 <snapferry's PID>` to DIR/unit-I.pid once snapferry started;
  SNAPFERRY_RAY_TEST_FAIL=I      unit I runs snapferry with a unit the plan lacks (exit 2).
"""
import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

STORE, LOCKED = 3, 4  # snapferry: store unreachable/auth; the lease is held by another run
RETRY_PAUSE_S = 5
LEASE_POLL_S = 10


class TransientUnitError(Exception):
    """A unit's failure worth running it again (Ray retries it: retry_exceptions)."""


@ray.remote(num_cpus=0)
class Ledger:
    """Every attempt of every unit: where it ran and how it ended (a killed attempt has no rc).
    It lives on the driver's node; a unit runs on without it (attempts unknown) if it is lost."""

    def __init__(self):
        self.attempts = {}

    def start(self, unit, node):
        self.attempts.setdefault(unit, []).append({"node": node, "rc": None, "tail": "",
                                                   "lease_waits": 0})
        return len(self.attempts[unit])

    def end(self, unit, rc, tail, lease_waits):
        self.attempts[unit][-1].update(rc=rc, tail=tail, lease_waits=lease_waits)

    def all(self):
        return self.attempts


def _die_with_parent():
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the binary dies with its Ray worker


def _sync(argv, pids_file):
    """Runs snapferry (dying with this Ray worker): its exit code and the tail of its stderr."""
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
    if pids_file:
        with open(pids_file + ".tmp", "w") as f:
            f.write(f"{os.getpid()} {p.pid}")
        os.rename(pids_file + ".tmp", pids_file)
    _, err = p.communicate()
    return p.returncode, "\n".join(err.strip().splitlines()[-5:])


def _tell(call, *args):
    try:
        return ray.get(call.remote(*args), timeout=60)
    except Exception:  # noqa: BLE001 - the ledger is for the summary only
        return 0


@ray.remote(num_cpus=1)
def run_unit(snapferry, url, unit, flags, lease_wait, ledger, hooks):
    node = f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:8]}"
    attempt = _tell(ledger.start, unit, node)
    pids = hooks.get("pids")
    pids_file = (os.path.join(pids[1], f"unit-{unit}.pid")
                 if pids and pids[0] == unit and attempt == 1 else None)
    index = str(unit if hooks.get("fail") != unit else 1_000_000)
    argv = [snapferry, "sync", "--plan", url, "--unit", index, *flags]
    deadline = time.monotonic() + lease_wait
    rc, tail = _sync(argv, pids_file)
    waits = 0
    while rc == LOCKED and time.monotonic() < deadline:
        waits += 1
        time.sleep(LEASE_POLL_S)
        rc, tail = _sync(argv, None)
    _tell(ledger.end, unit, rc, tail, waits)
    if rc in (STORE, LOCKED) or rc < 0:
        time.sleep(min(60, RETRY_PAUSE_S * attempt))
        raise TransientUnitError(f"unit {unit}: exit {rc}: {tail}")
    return rc


def split_round(rest):
    """SRC DST and the flags after `--`: (the plan's arguments, the units' and commit's flags)."""
    if len(rest) < 2 or rest[0].startswith("-") or rest[1].startswith("-"):
        raise SystemExit("snapferry_ray: after -- give SRC DST --units U [flags]")
    flags, it = [], iter(rest[2:])
    for arg in it:
        if arg in ("--units", "--control"):
            next(it, None)
        elif arg != "--json" and not arg.startswith(("--units=", "--control=")):
            flags.append(arg)
    plan = rest if "--json" in rest else [*rest, "--json"]
    return plan, flags


def main(argv):
    if "--" not in argv:
        raise SystemExit(__doc__)
    i = argv.index("--")
    ap = argparse.ArgumentParser(usage=__doc__.splitlines()[2].strip())
    ap.add_argument("--address", default="auto", help="the Ray cluster (default: auto)")
    ap.add_argument("--snapferry", default="snapferry", help="the binary, on every node")
    ap.add_argument("--max-retries", type=int, default=3, help="runs of a unit beyond its first")
    ap.add_argument("--lease-wait", type=float, default=150,
                    help="seconds a unit waits for its lease held by another run (exit 4)")
    ap.add_argument("--node-ip-address", help="this driver's address as the cluster sees it")
    a = ap.parse_args(argv[:i])
    plan_args, flags = split_round(argv[i + 1:])

    p = subprocess.run([a.snapferry, "plan", *plan_args], stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        print(f"snapferry_ray: snapferry plan exited {p.returncode}", file=sys.stderr)
        return 1
    plan = json.loads(p.stdout)
    url, units = plan["url"], len(plan["units"])
    print(f"plan {url}: {units} units", flush=True)

    hooks = {}
    if os.environ.get("SNAPFERRY_RAY_TEST_PIDS"):
        u, d = os.environ["SNAPFERRY_RAY_TEST_PIDS"].split(":", 1)
        hooks["pids"] = (int(u), d)
    if os.environ.get("SNAPFERRY_RAY_TEST_FAIL"):
        hooks["fail"] = int(os.environ["SNAPFERRY_RAY_TEST_FAIL"])

    init = {"_node_ip_address": a.node_ip_address} if a.node_ip_address else {}
    ray.init(address=a.address, log_to_driver=False, **init)
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    ledger = Ledger.options(scheduling_strategy=here).remote()
    task = run_unit.options(max_retries=a.max_retries, retry_exceptions=[TransientUnitError],
                            scheduling_strategy="SPREAD")
    refs = [task.remote(a.snapferry, url, u, flags, a.lease_wait, ledger, hooks)
            for u in range(units)]
    outcome = {}
    for u, ref in enumerate(refs):
        try:
            outcome[u] = ("ok", None) if ray.get(ref) == 0 else ("FAILED", None)
        except Exception as e:  # noqa: BLE001 - retries exhausted, or Ray lost the task
            outcome[u] = ("FAILED", type(e).__name__)
    try:
        attempts = ray.get(ledger.all.remote(), timeout=60)
    except Exception:  # noqa: BLE001
        attempts = {}
    ray.shutdown()

    failed = []
    for u in range(units):
        tries = attempts.get(u, [])
        last = tries[-1] if tries else {"node": "-", "rc": None, "tail": "", "lease_waits": 0}
        status, why = outcome[u]
        rc = last["rc"] if last["rc"] is not None else 0 if status == "ok" else "killed"
        waits = sum(t["lease_waits"] for t in tries)
        extra = f" lease-waits {waits}" if waits else ""
        extra += f" ({why})" if why and status != "ok" else ""
        print(f"unit {u}: {status} exit {rc} attempts {len(tries)} node {last['node']}{extra}",
              flush=True)
        if status != "ok":
            failed.append(u)
            for line in last["tail"].splitlines():
                print(f"    {line}", flush=True)
    if failed:
        print(f"snapferry_ray: units {', '.join(map(str, failed))} of {units} failed; "
              f"not committing (plan {url})", file=sys.stderr)
        return 1
    c = subprocess.run([a.snapferry, "commit", "--plan", url, *flags])
    print(f"commit: exit {c.returncode}", flush=True)
    return 0 if c.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
