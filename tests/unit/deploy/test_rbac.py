"""The RBAC in deploy/ grants exactly the API calls the controller and the speaker make.

``REQUIRED`` is the table of calls, written by reading the code. Two checks keep it honest:
- ``api_calls()`` reads the source with ``ast`` (every ``path_for(...)`` and the request, ``get`` or
  ``Informer`` around it) starting from each program's entry module and following its imports, and
  must find exactly the table's (group, resource, verb) entries: a new API call without a table
  entry, or a table entry the code no longer needs, fails;
- the rendered Roles/ClusterRoles bound to each ServiceAccount must grant every table entry and
  nothing more, with no wildcards.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.unit.deploy.test_manifests import NAMESPACE, OBJECTS, Obj, by_kind, one

ROOT = Path(__file__).parents[3]
PROGRAMS = {"controller": "controller.main", "speaker": "lbspeaker.speaker.main"}
HTTP_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}

CLUSTER = "cluster"  # the call may touch any namespace (or a cluster-scoped resource)
OWN = "own"          # only lbspeaker-system


@dataclass(frozen=True)
class Need:
    group: str
    resource: str       # with "/subresource" when there is one
    verb: str
    scope: str          # CLUSTER or OWN
    name: str | None = None  # when every call names this one object


REQUIRED: dict[str, set[Need]] = {
    # controller/reconcile.py, controller/main.py, lbspeaker/kube/{events,leader}.py
    "controller": {
        Need("", "services", "list", CLUSTER),
        Need("", "services", "watch", CLUSTER),
        Need("", "services/status", "patch", CLUSTER),
        Need("", "configmaps", "list", OWN),
        Need("", "configmaps", "watch", OWN),
        Need("", "events", "create", CLUSTER),   # Events go to the Service's namespace
        Need("", "events", "patch", CLUSTER),
        Need("coordination.k8s.io", "leases", "get", OWN, "lbspeaker-controller"),
        Need("coordination.k8s.io", "leases", "update", OWN, "lbspeaker-controller"),
        Need("coordination.k8s.io", "leases", "create", OWN),
    },
    # lbspeaker/speaker/app.py, lbspeaker/speaker/main.py, lbspeaker/speaker/lease.py, lbspeaker/kube/events.py
    "speaker": {
        Need("", "services", "list", CLUSTER),
        Need("", "services", "watch", CLUSTER),
        Need("discovery.k8s.io", "endpointslices", "list", CLUSTER),
        Need("discovery.k8s.io", "endpointslices", "watch", CLUSTER),
        Need("", "nodes", "list", CLUSTER),
        Need("", "nodes", "watch", CLUSTER),
        Need("", "configmaps", "list", OWN),
        Need("", "configmaps", "watch", OWN),
        Need("coordination.k8s.io", "leases", "get", OWN),       # speaker-<node>: names not known here
        Need("coordination.k8s.io", "leases", "list", OWN),
        Need("coordination.k8s.io", "leases", "watch", OWN),
        Need("coordination.k8s.io", "leases", "create", OWN),
        Need("coordination.k8s.io", "leases", "update", OWN),
        # The memberlist key and the BGP passwords: one informer over the namespace's Secrets (the
        # names come from the config), so that no read blocks the reconcile loop.
        Need("", "secrets", "list", OWN),
        Need("", "secrets", "watch", OWN),
        Need("", "events", "create", CLUSTER),
        Need("", "events", "patch", CLUSTER),
    },
}


# -- what the code calls -----------------------------------------------------------------------------

def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_closure(entry: str) -> dict[str, Path]:
    """Every module of this repository ``entry`` imports, directly or not (packages' __init__ too)."""
    seen: dict[str, Path] = {}
    todo = [entry]
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if module in seen or path is None:
            continue
        seen[module] = path
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                todo.append(node.module)
                todo += [f"{node.module}.{a.name}" for a in node.names]
    return seen


@dataclass(frozen=True)
class Call:
    where: str
    group: str
    resource: str
    verb: str
    namespaced: bool
    name: str | None


class _Calls(ast.NodeVisitor):
    """API calls in one module: path_for(...) inside Informer(...), rest.request/get(...)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text(), str(path))
        self.constants = {t.id: n.value.value for n in self.tree.body if isinstance(n, ast.Assign)
                          for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
        # `@property def path(self): return path_for(...)`: calls spell it `self.path`.
        self.properties: dict[str, ast.Call] = {}
        for fn in ast.walk(self.tree):
            if isinstance(fn, ast.FunctionDef) and any(
                    isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list):
                ret = fn.body[-1]
                if isinstance(ret, ast.Return) and self._is_path_for(ret.value):
                    assert isinstance(ret.value, ast.Call)
                    self.properties[fn.name] = ret.value
        self.calls: list[Call] = []
        self.used: set[int] = set()  # ids of path_for nodes accounted for

    @staticmethod
    def _is_path_for(node: ast.expr | None) -> bool:
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "path_for"

    def _value(self, node: ast.expr) -> object:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name) and node.id in self.constants:
            return self.constants[node.id]
        return ...  # known only at run time

    def _path(self, node: ast.expr) -> ast.Call | None:
        if self._is_path_for(node):
            assert isinstance(node, ast.Call)
            return node
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            return self.properties.get(node.attr)
        return None

    def _add(self, call: ast.Call, path_call: ast.Call, verbs: list[str] | None) -> None:
        args = list(path_call.args) + [None] * (5 - len(path_call.args))
        kw = {k.arg: k.value for k in path_call.keywords}
        api, resource, namespace, name, sub = (
            kw.get(field, arg) for field, arg in zip(("api", "resource", "namespace", "name", "subresource"),
                                                     args, strict=True))
        where = f"{self.path.relative_to(ROOT)}:{call.lineno}"
        assert api is not None and resource is not None, where
        api_v, resource_v = self._value(api), self._value(resource)
        assert isinstance(api_v, str) and isinstance(resource_v, str), f"{where}: api and resource must be literal"
        group = "" if api_v == "v1" else api_v.rsplit("/", 1)[0]
        sub_v = self._value(sub) if sub is not None else None
        full = f"{resource_v}/{sub_v}" if sub_v else resource_v
        name_v = self._value(name) if name is not None else None
        named = name is not None
        if verbs is None:  # GET: a read of one object or a list
            verbs = ["get"] if named else ["list"]
        for verb in verbs:
            self.calls.append(Call(where, group, full, verb, namespace is not None,
                                   name_v if isinstance(name_v, str) else None))
        self.used.add(id(path_call))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id == "Informer" and len(node.args) >= 2:
            p = self._path(node.args[1])
            if p is not None:
                self._add(node, p, ["list", "watch"])
        elif isinstance(func, ast.Attribute) and func.attr in ("request", "get", "watch") and node.args:
            if func.attr == "request" and len(node.args) >= 2:
                method, target = self._value(node.args[0]), node.args[1]
            else:
                method, target = "GET", node.args[0]
            p = self._path(target)
            if p is not None:
                assert isinstance(method, str), f"{self.path}:{node.lineno}: HTTP method must be literal"
                verb = ["watch"] if func.attr == "watch" else HTTP_VERBS.get(method.upper())
                self._add(node, p, [verb] if isinstance(verb, str) else verb)
        self.generic_visit(node)

    def unexplained(self) -> list[str]:
        """path_for calls that are neither a request target nor a property used as one."""
        return [f"{self.path.relative_to(ROOT)}:{n.lineno}" for n in ast.walk(self.tree)
                if isinstance(n, ast.Call) and self._is_path_for(n) and id(n) not in self.used]


def api_calls(program: str) -> tuple[list[Call], list[str]]:
    calls: list[Call] = []
    unexplained: list[str] = []
    for path in import_closure(PROGRAMS[program]).values():
        if path.is_relative_to(ROOT / "lbspeaker" / "testing"):
            continue
        visitor = _Calls(path)
        visitor.visit(visitor.tree)
        calls += visitor.calls
        unexplained += visitor.unexplained()
    return calls, unexplained


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_every_api_call_is_understood(program: str) -> None:
    calls, unexplained = api_calls(program)
    assert calls, "found no API calls at all: the source scan is broken"
    assert not unexplained, f"path_for() used in a way this test cannot follow: {unexplained}"


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_required_table_matches_the_code(program: str) -> None:
    calls, _ = api_calls(program)
    found = {(c.group, c.resource, c.verb) for c in calls}
    table = {(n.group, n.resource, n.verb) for n in REQUIRED[program]}
    assert found - table == set(), f"{program} makes API calls deploy/ RBAC does not account for: add them"
    assert table - found == set(), f"{program} no longer makes these calls: remove them from the table and RBAC"
    for need in REQUIRED[program]:
        matching = [c for c in calls if (c.group, c.resource, c.verb) == (need.group, need.resource, need.verb)]
        if need.scope == OWN:
            assert all(c.namespaced for c in matching), f"{need} is declared namespaced but {matching} is not"


def test_resource_names_in_the_table_are_the_ones_the_code_uses() -> None:
    """The names RBAC is restricted to are passed at run time: check them where they are chosen."""
    tree = ast.parse((ROOT / "controller" / "main.py").read_text())
    electors = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                and n.func.id == "LeaderElector"]
    assert electors, "controller/main.py no longer makes a LeaderElector"
    for call in electors:  # LeaderElector(rest, namespace, name, identity, ...)
        assert isinstance(call.args[2], ast.Constant) and call.args[2].value == "lbspeaker-controller"
    from lbspeaker.speaker import app as speaker

    assert speaker.MEMBERLIST_SECRET == "lbspeaker-memberlist"
    tree = ast.parse((ROOT / "lbspeaker" / "speaker" / "app.py").read_text())
    secret_informers = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                        and n.func.id == "Informer" and "secrets" in ast.unparse(n.args[1])]
    assert len(secret_informers) == 1
    # Namespaced: the Role lets the speaker read the Secrets of its own namespace only.
    assert "namespace" in ast.unparse(secret_informers[0].args[1])


def test_scan_finds_the_calls_it_was_written_for() -> None:
    """The scanner itself: a few calls known to be there, with their verbs and lines."""
    calls, _ = api_calls("controller")
    status = [c for c in calls if c.resource == "services/status"]
    assert status and all(c.verb == "patch" and c.where.startswith("controller/reconcile.py") for c in status)
    lease = {c.verb for c in calls if c.resource == "leases" and c.where.startswith("lbspeaker/kube/leader.py")}
    assert lease == {"get", "create", "update"}
    speaker_calls, _ = api_calls("speaker")
    assert not [c for c in speaker_calls if c.resource == "services/status"], "the speaker never writes status"


# -- what deploy/ grants -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Grant:
    group: str
    resource: str
    verb: str
    scope: str
    names: frozenset[str]  # empty: any name


def _rules_grants(rules: list[Obj], scope: str) -> set[Grant]:
    out: set[Grant] = set()
    for rule in rules:
        names = frozenset(rule.get("resourceNames", []))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add(Grant(group, resource, verb, scope, names))
    return out


def grants(service_account: str) -> set[Grant]:
    out: set[Grant] = set()
    for kind, role_kind, scope in (("ClusterRoleBinding", "ClusterRole", CLUSTER), ("RoleBinding", "Role", OWN)):
        for binding in by_kind(OBJECTS, kind):
            subjects = binding.get("subjects", [])
            if not any(s["kind"] == "ServiceAccount" and s["name"] == service_account
                       and s.get("namespace") == NAMESPACE for s in subjects):
                continue
            ref = binding["roleRef"]
            assert ref["kind"] == role_kind, f"{binding['metadata']['name']}: bind a {role_kind}"
            role = one(OBJECTS, role_kind, ref["name"])
            if kind == "RoleBinding":
                assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
            out |= _rules_grants(role["rules"], scope)
    return out


def _covers(grant: Grant, need: Need) -> bool:
    return ((grant.group, grant.resource, grant.verb) == (need.group, need.resource, need.verb)
            and (grant.scope == CLUSTER or need.scope == OWN)
            and (not grant.names or need.name in grant.names))


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_rbac_grants_every_required_call(program: str) -> None:
    have = grants(program)
    missing = [n for n in REQUIRED[program] if not any(_covers(g, n) for g in have)]
    assert not missing, f"ServiceAccount {program} lacks {missing}"


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_rbac_grants_nothing_more(program: str) -> None:
    """Least privilege: each grant is needed, as narrow in scope and names as the calls allow."""
    for grant in grants(program):
        needs = [n for n in REQUIRED[program] if _covers(grant, n)]
        assert needs, f"{program} is granted {grant}, which no call needs"
        assert grant.scope == OWN or any(n.scope == CLUSTER for n in needs), f"{grant} could be a Role"
        named = {n.name for n in needs if n.name is not None}
        if len(named) == len(needs) and grant.verb != "create":  # RBAC cannot restrict create by name
            assert grant.names == named, f"{grant} could be restricted to resourceNames {sorted(named)}"


def test_no_wildcards_anywhere() -> None:
    for kind in ("Role", "ClusterRole"):
        for role in by_kind(OBJECTS, kind):
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(field, []), f"{kind} {role['metadata']['name']}: {field} has *"
                assert "nonResourceURLs" not in rule


def test_only_our_service_accounts_are_bound() -> None:
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        for binding in by_kind(OBJECTS, kind):
            for s in binding["subjects"]:
                assert (s["kind"], s["name"], s["namespace"]) in {
                    ("ServiceAccount", "controller", NAMESPACE), ("ServiceAccount", "speaker", NAMESPACE)}


def test_least_privilege_check_rejects_a_broad_grant() -> None:
    """The checks above can fail: a cluster-wide secrets read for the speaker is flagged."""
    broad = Grant("", "secrets", "list", CLUSTER, frozenset())
    needs = [n for n in REQUIRED["speaker"] if _covers(broad, n)]
    assert needs and all(n.scope == OWN for n in needs), "a cluster-wide grant where a Role suffices"
    named = Need("coordination.k8s.io", "leases", "get", OWN, "lbspeaker-controller")
    assert not _covers(Grant("coordination.k8s.io", "leases", "get", OWN, frozenset({"other"})), named)
