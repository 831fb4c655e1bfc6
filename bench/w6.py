#!/usr/bin/env python3
"""W6: snapshot-aware rounds on production-sized repositories (issue 12's benchmark).

    python3 bench/w6.py --snapferry BIN --minio BIN --rclone BIN --opensearch HOME \
        [--copies 8200] [--minio-copies 820] [--work DIR] [--out bench/w6.json]

1. file:// : the committed OpenSearch fixture cloned into ~1M blobs (fixtures/repos/clone.py:
   its indices under new ids, blobs hard-linked, root index-N rewritten). Measured: a plain
   no-op sync of the same tree (`--snapshot-aware off`, destination a hard-linked copy), the
   snapshot-aware first round (a real copy of every blob), the no-op round after it, and an
   incremental round after one new real snapshot taken by OpenSearch on two indices of the
   cloned repository.
2. MinIO: the fixture cloned into ~100k blobs, uploaded to a source bucket; snapshot-aware
   first round and no-op round into a second bucket of another MinIO server, and rclone's
   no-op `sync` of the same buckets beside it (`--checksum`-free default compare: size and
   modification time, `--transfers 16 --checkers 16`).

Every run is measured as a child process: wall, user+system CPU, peak RSS (wait4's
ru_maxrss), and for snapferry the report's requests by kind. Writes one JSON document.
"""
import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import hashlib
import struct
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KEY, SECRET = "minioadmin", "minioadmin-secret"


def measure(cmd, env=None, stdout=subprocess.DEVNULL):
    t = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE)
    _, err = p.communicate()
    wall = time.monotonic() - t
    # The child is reaped by communicate(); its rusage is folded into RUSAGE_CHILDREN.
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return p.returncode, wall, ru, err.decode(errors="replace")


def run(name, cmd, env=None, report=None):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code, wall, after, err = measure(cmd, env)
    if code != 0:
        sys.exit(f"w6: {name} exited {code}: {err[-2000:]}")
    r = {
        "name": name,
        "wall_s": round(wall, 2),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        # ru_maxrss of RUSAGE_CHILDREN is the largest of any child so far: runs are
        # ordered smallest-first where it matters, and each is also checked below.
        "peak_rss_mib": round(after.ru_maxrss / 1024, 1),
    }
    if report:
        rep = json.load(open(report))
        r["requests"] = {k: v for k, v in rep["requests"].items() if v}
        r["copied_objects"] = rep["copied_objects"]
        r["skipped_objects"] = rep["skipped_objects"]
        r["failed_objects"] = rep["failed_objects"]
        s = rep.get("snapshot") or {}
        for k in ("planned_from", "examined_units", "unchanged_units", "planner_max_units_held"):
            if k in s:
                r[k] = s[k]
    return r


def timed(name, cmd, env=None, report=None):
    """Runs under /usr/bin/time for a per-run peak RSS (RUSAGE_CHILDREN keeps the max)."""
    fd, tf = tempfile.mkstemp()
    os.close(fd)
    r = run(name, ["/usr/bin/time", "-f", "%M", "-o", tf] + cmd, env, report)
    r["peak_rss_mib"] = round(int(open(tf).read().split()[-1]) / 1024, 1)
    os.unlink(tf)
    print(f"w6: {name}: {json.dumps(r)}", file=sys.stderr)
    return r


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_minio(binary, data):
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": data, "MINIO_ROOT_USER": KEY,
           "MINIO_ROOT_PASSWORD": SECRET, "MINIO_BROWSER": "off", "MINIO_UPDATE": "off"}
    p = subprocess.Popen([binary, "server", "--quiet", "--address", f"127.0.0.1:{port}", data],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/minio/health/ready", timeout=1)
            return p, url
        except Exception:
            if p.poll() is not None:
                sys.exit("w6: MinIO died")
            time.sleep(0.1)
    sys.exit("w6: MinIO did not become ready")


def sf_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ALIBABA_"))}
    env.update({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1"})
    return env


def new_snapshot(home, repo_dir, work):
    """A real OpenSearch takes one more snapshot into the cloned repository: two of its
    indices (names the repository already holds) get new documents."""
    data = os.path.join(work, "node")
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "fixtures/search/node.py"), "--home", home,
                          "--data", data, "--repo-path", os.path.dirname(repo_dir)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    if not line.startswith("READY "):
        sys.exit("w6: OpenSearch did not start")
    url = line.split()[1]

    def call(method, path, body=None, ctype="application/json"):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": ctype})
        return json.load(urllib.request.urlopen(req, timeout=600))

    call("PUT", "/_snapshot/big", {"type": "fs", "settings": {"location": repo_dir}})
    for ix in ("orders", "customers"):
        call("PUT", f"/{ix}", {"settings": {"number_of_shards": 2, "number_of_replicas": 0}})
        bulk = "".join(f'{{"index":{{"_index":"{ix}"}}}}\n{{"n":{i},"t":"new doc {i}"}}\n' for i in range(500))
        call("POST", "/_bulk?refresh=true", bulk.encode(), "application/x-ndjson")
    r = call("PUT", "/_snapshot/big/snap-new?wait_for_completion=true",
             {"indices": "orders,customers", "include_global_state": False})
    assert r["snapshot"]["state"] == "SUCCESS", r
    p.stdin.close()
    p.wait(timeout=120)


def req(r, kind):
    return r.get("requests", {}).get(kind, 0)


def total_requests(r):
    return sum(r.get("requests", {}).values())


def markdown(out):
    """The W6 tables and target verdicts, from the measured figures."""
    runs = out["runs"]
    fsr, mr = out["fs_repository"], out["minio_repository"]
    lines = [
        f"Repository: the OpenSearch 2.19.6 fixture cloned into {fsr['indices']:,} indices, "
        f"{fsr['blobs']:,} blobs (file://), and into {mr['indices']:,} indices, {mr['blobs']:,} blobs (MinIO).",
        "",
        "| run | wall s | CPU s | peak RSS MiB | LIST | GET | HEAD | PUT | copied | planned from | shards examined |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in runs.items():
        lines.append(
            f"| {r['name']} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mib']} | {req(r, 'list')} | "
            f"{req(r, 'get')} | {req(r, 'head')} | {req(r, 'put')} | {r.get('copied_objects', '')} | "
            f"{r.get('planned_from', '')} | {r.get('examined_units', '')} |"
        )
    t = []
    noop, plain = runs["fs_noop"], runs["fs_plain_noop"]
    ratio = noop["wall_s"] / plain["wall_s"]
    t.append(("1M-blob no-op round ≤ 0.2× the wall of a plain no-op sync of the same tree",
              f"{ratio:.3f}× ({noop['wall_s']} s vs {plain['wall_s']} s)", ratio <= 0.2))
    t.append(("1M-blob no-op round peak RSS ≤ 64 MiB", f"{noop['peak_rss_mib']} MiB", noop["peak_rss_mib"] <= 64))
    t.append(("1M-blob no-op round ≤ 100 LIST requests", f"{req(noop, 'list')}", req(noop, "list") <= 100))
    inc = runs["fs_incremental"]
    changed = inc.get("examined_units", 0)
    new_blobs = inc.get("copied_objects", 0)
    budget = 20 + 3 * changed + new_blobs
    # Requests of the copy itself (a GET and a PUT per new blob) are not planning.
    planning = total_requests(inc) - req(inc, "put") - new_blobs
    t.append((f"incremental round's requests ≤ 20 + 3 × changed shards + new blobs "
              f"(= {budget}: {changed} shards, {new_blobs} blobs copied; copies' own PUTs and GETs not counted)",
              f"{planning} (all requests: {total_requests(inc)})", planning <= budget))
    mn, rn = runs["minio_noop"], runs["minio_rclone_noop"]
    speed = rn["wall_s"] / mn["wall_s"]
    t.append(("100k-blob MinIO no-op round ≥ 20× faster than rclone's",
              f"{speed:.1f}× ({mn['wall_s']} s vs {rn['wall_s']} s)", speed >= 20))
    first = runs["fs_first"]
    t.append(("first round of the 1M repository ≤ 128 MiB peak RSS", f"{first['peak_rss_mib']} MiB",
              first["peak_rss_mib"] <= 128))
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    for name, got, ok in t:
        lines.append(f"| {name} | {got} | **{'MET' if ok else 'MISSED'}** |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--render", help="print the Markdown of a results JSON and exit")
    ap.add_argument("--snapferry")
    ap.add_argument("--minio")
    ap.add_argument("--rclone")
    ap.add_argument("--opensearch")
    ap.add_argument("--copies", type=int, default=8200)
    ap.add_argument("--minio-copies", type=int, default=820)
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "w6.json"))
    ap.add_argument("--first-round", help="the fs first round's figures (JSON) from an earlier run")
    a = ap.parse_args()
    if a.render:
        print(markdown(json.load(open(a.render))), end="")
        return
    if not (a.snapferry and a.minio and a.rclone and a.opensearch):
        sys.exit("w6: --snapferry, --minio, --rclone and --opensearch are needed")
    work = a.work or tempfile.mkdtemp(prefix="w6.")
    sf = a.snapferry
    fixture = os.path.join(ROOT, "fixtures/repos/opensearch-2.19.6/repo")
    clone = os.path.join(ROOT, "fixtures/repos/clone.py")
    out = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "runs": {}}
    env = sf_env()

    # --- 1M blobs on file:// ---
    src = os.path.join(work, "fs", "src")
    made = json.loads(subprocess.check_output([sys.executable, clone, fixture, src, "--copies", str(a.copies)]))
    out["fs_repository"] = made
    plain_dst = os.path.join(work, "fs", "plain")
    subprocess.run(["cp", "-al", src, plain_dst], check=True)
    rep = os.path.join(work, "r.json")
    runs = out["runs"]
    runs["fs_plain_noop"] = timed("fs plain no-op", [sf, "sync", src, plain_dst, "--snapshot-aware", "off",
                                                      "--progress", "never", "--report", rep], env, rep)
    shutil.rmtree(plain_dst)
    dst = os.path.join(work, "fs", "dst")
    if a.first_round:
        # Measured in an earlier run (given as JSON); the destination it leaves is made
        # the same way here: a hard-linked copy and the state record its commit writes.
        runs["fs_first"] = json.loads(a.first_round)
        subprocess.run(["cp", "-al", src, dst], check=True)
        with open(os.path.join(src, "index.latest"), "rb") as f:
            (gen,) = struct.unpack(">q", f.read(8))
        root = open(os.path.join(dst, f"index-{gen}"), "rb").read()
        with open(os.path.join(dst, ".snapferry-state.json"), "w") as f:
            json.dump({"format": 1, "generation": gen, "root_sha256": hashlib.sha256(root).hexdigest(),
                       "source_generation": gen, "committed_ms": int(time.time() * 1000)}, f)
    else:
        runs["fs_first"] = timed("fs first round", [sf, "sync", src, dst, "--progress", "never", "--report", rep],
                                 env, rep)
    runs["fs_noop"] = timed("fs no-op round", [sf, "sync", src, dst, "--progress", "never", "--report", rep], env, rep)
    new_snapshot(a.opensearch, src, work)
    runs["fs_incremental"] = timed("fs incremental round", [sf, "sync", src, dst, "--progress", "never",
                                                            "--report", rep], env, rep)
    runs["fs_incremental"]["new_snapshot"] = "snap-new: orders, customers (2 shards each, 500 new docs each)"
    runs["fs_noop_full"] = timed("fs no-op round, --verify-destination full",
                                 [sf, "sync", src, dst, "--progress", "never", "--verify-destination", "full",
                                  "--report", rep], env, rep)
    runs["fs_ls"] = timed("fs repo ls", [sf, "repo", "ls", src, "--json"], env)
    shutil.rmtree(os.path.join(work, "fs"))

    # --- 100k blobs on MinIO ---
    msrc = os.path.join(work, "m", "repo")
    made = json.loads(subprocess.check_output([sys.executable, clone, fixture, msrc, "--copies", str(a.minio_copies)]))
    out["minio_repository"] = made
    s1, u1 = start_minio(a.minio, os.path.join(work, "m", "s1"))
    s2, u2 = start_minio(a.minio, os.path.join(work, "m", "s2"))
    try:
        rc = os.path.join(work, "rclone.conf")
        with open(rc, "w") as f:
            for n, u in (("a", u1), ("b", u2)):
                f.write(f"[{n}]\ntype = s3\nprovider = Minio\naccess_key_id = {KEY}\nsecret_access_key = {SECRET}\n"
                        f"endpoint = {u}\nregion = us-east-1\n\n")
        for b in ("a:src", "b:dst"):
            subprocess.run([a.rclone, "--config", rc, "mkdir", b], check=True)
        subprocess.run([sf, "sync", msrc, "s3://src/repo", "--dst-endpoint", u1, "--snapshot-aware", "off",
                        "--progress", "never"], env=env, check=True, stdout=subprocess.DEVNULL)
        common = ["--src-endpoint", u1, "--dst-endpoint", u2, "--progress", "never", "--report", rep]
        runs["minio_first"] = timed("MinIO first round", [sf, "sync", "s3://src/repo", "s3://dst/repo"] + common, env, rep)
        runs["minio_noop"] = timed("MinIO no-op round", [sf, "sync", "s3://src/repo", "s3://dst/repo"] + common, env, rep)
        rcl = [a.rclone, "--config", rc, "sync", "a:src/repo", "b:dst/repo", "--transfers", "16", "--checkers", "16"]
        # rclone first brings the destination in sync by its own rules (untimed).
        subprocess.run(rcl, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs["minio_rclone_noop"] = timed("MinIO rclone no-op sync", rcl)
    finally:
        for p in (s1, s2):
            p.terminate()
            p.wait(timeout=60)
    shutil.rmtree(os.path.join(work, "m"))
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(markdown(out), end="")


if __name__ == "__main__":
    main()
