"""Checks Kubernetes manifests against the API schema, and prints their command lines.

    python validate.py FILE.yaml...                 every document checked; exit 1 on a problem
    python validate.py --docs FILE.yaml...          also prints the documents as a JSON list
    python validate.py --commands [--set K=V]... FILE.yaml...
                                                    also prints {job name: argv} as JSON, with
                                                    $(VAR) expanded from the ConfigMaps and
                                                    Secrets among FILEs and the --set values

The schema is the official Kubernetes Python client's models (generated from the API's
OpenAPI document): every field of every object must be one the model names, with a value of
its type, and every required field present. `kubectl apply --dry-run=server` would say the
same with a cluster at hand; this needs none.
"""

import argparse
import json
import re
import sys

import yaml
from kubernetes import client
from kubernetes.client import models

PRIMITIVE = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": (int, float),
    "object": object,
    "datetime": str,
    "date": str,
}


def check(value, type_name, path, problems):
    """Appends to `problems` what in `value` is not of `type_name`."""
    if type_name.startswith("list["):
        if not isinstance(value, list):
            problems.append(f"{path}: a list is due, not {value!r}")
            return
        for i, v in enumerate(value):
            check(v, type_name[5:-1], f"{path}[{i}]", problems)
        return
    if type_name.startswith(("dict(", "dict[")):
        if not isinstance(value, dict):
            problems.append(f"{path}: a map is due, not {value!r}")
            return
        inner = type_name[5:-1].split(", ", 1)[1]  # dict(str, T) or dict[str, T]
        for k, v in value.items():
            check(v, inner, f"{path}.{k}", problems)
        return
    if type_name in PRIMITIVE:
        want = PRIMITIVE[type_name]
        if type_name == "int" and isinstance(value, bool):
            problems.append(f"{path}: an integer is due, not {value!r}")
        elif not isinstance(value, want):
            problems.append(f"{path}: a {type_name} is due, not {value!r}")
        return
    model = getattr(models, type_name, None)
    if model is None:
        problems.append(f"{path}: unknown schema type {type_name}")
        return
    if not isinstance(value, dict):
        problems.append(f"{path}: an object ({type_name}) is due, not {value!r}")
        return
    by_json = {j: a for a, j in model.attribute_map.items()}
    for key, v in value.items():
        attr = by_json.get(key)
        if attr is None:
            problems.append(f"{path}.{key}: no such field in {type_name}")
            continue
        check(v, model.openapi_types[attr], f"{path}.{key}", problems)


def model_of(doc):
    """The model class name of a document: apiVersion batch/v1, kind Job -> V1Job."""
    version = str(doc.get("apiVersion", "")).split("/")[-1]
    return version[0].upper() + version[1:] + str(doc.get("kind", ""))


def validate(doc, where):
    problems = []
    name = model_of(doc)
    if getattr(models, name, None) is None:
        return [f"{where}: no Kubernetes type {doc.get('apiVersion')} {doc.get('kind')}"]
    check(doc, name, where, problems)
    if not problems:
        # The models' constructors refuse a missing required field.
        try:
            client.ApiClient()._ApiClient__deserialize(doc, name)
        except (ValueError, TypeError) as e:
            problems.append(f"{where}: {e}")
    return problems


VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(s, env):
    """Kubernetes' $(VAR) expansion of a command line: $(VAR) of a defined variable is its
    value, `$$` is `$`, anything else stays as written."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return VAR.sub(sub, s)


def pod_spec(doc):
    spec = doc.get("spec", {})
    if doc.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return spec.get("template", {}).get("spec", {})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commands", action="store_true")
    ap.add_argument("--docs", action="store_true", help="print the documents as a JSON list")
    ap.add_argument("--set", action="append", default=[], metavar="K=V")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    docs, problems = [], []
    for f in a.files:
        with open(f) as fh:
            for i, doc in enumerate(yaml.safe_load_all(fh)):
                if doc is None:
                    continue
                where = f"{f}#{i}"
                problems += validate(doc, where)
                docs.append(doc)
    for p in problems:
        print(f"validate: {p}", file=sys.stderr)
    if problems:
        return 1
    if a.docs:
        print(json.dumps(docs, indent=2))
    elif a.commands:
        env = {}
        for d in docs:
            if d["kind"] in ("ConfigMap", "Secret"):
                env.update(d.get("data") or {})
                env.update(d.get("stringData") or {})
        for kv in a.set:
            k, _, v = kv.partition("=")
            env[k] = v
        out = {}
        for d in docs:
            if d["kind"] in ("Job", "CronJob"):
                for c in pod_spec(d).get("containers", []):
                    argv = (c.get("command") or []) + (c.get("args") or [])
                    out[d["metadata"]["name"]] = [expand(x, env) for x in argv]
        print(json.dumps(out, indent=2))
    print(f"validate: {len(docs)} documents conform to the Kubernetes API schema", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
