"""The API reference, generated from the package at each build: one page per public module of ``mlcl``.

A module is public when no part of its dotted name starts with ``_`` (``mlcl.cli`` and its submodules are the
command line, documented on the CLI page, and are left out). A module's names are its ``__all__`` (or, without
one, the functions and classes it defines). Each object is documented once, at its *home*: the shallowest public
module that exports it (``mlcl.Predictor``, ``mlcl.losses.functional.clml``); among modules of the same depth, a
package or a module that only re-exports (a facade such as ``mlcl.losses.functional``) comes first. Every other
module that exports it lists it in its table with a link to the home. Cross-references in docstrings are resolved
as Python would resolve the name in the module that defines the docstring, then mapped to the home
(:func:`resolve_docstring_refs`), so ``:func:`clml_correct_targets``` in ``mlcl/losses/clml.py`` links to
``mlcl.losses.functional.clml_correct_targets`` wherever the docstring is shown.

The pages are written to ``docs/api/`` (ignored by git) when the builder starts; a page is rewritten only when
its text changes, so that an unchanged API does not make Sphinx read every page again.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

LOG = logging.getLogger(__name__)

PACKAGE = "mlcl"
EXCLUDED = ("mlcl.cli", "mlcl.__main__")  # the command line: see cli.md
API_DIR = "api"


@dataclass
class Entry:
    """One name exported by one module."""

    module: str
    name: str
    obj: Any
    origin: str  # where it is defined: "module.qualname" (or the module's own name for a module)
    kind: str  # "function", "class", "exception", "data", "module"


@dataclass
class Api:
    """Every public module, its names, and the home of each object."""

    modules: dict[str, ModuleType] = field(default_factory=dict)
    entries: dict[str, list[Entry]] = field(default_factory=dict)  # module -> its names, in __all__'s order
    home: dict[str, str] = field(default_factory=dict)  # origin -> documented dotted name
    alias: dict[str, str] = field(default_factory=dict)  # any dotted name that reaches an object -> its home


def is_public(name: str) -> bool:
    """A dotted module name is public when no part starts with an underscore and it is not the CLI."""
    if any(part.startswith("_") for part in name.split(".")):
        return False
    return not any(name == ex or name.startswith(ex + ".") for ex in EXCLUDED)


def public_modules() -> dict[str, ModuleType]:
    """Import and return every public module of the package, sorted by name."""
    root = importlib.import_module(PACKAGE)
    names = [PACKAGE] + [info.name for info in pkgutil.walk_packages(root.__path__, PACKAGE + ".")]
    return {name: importlib.import_module(name) for name in sorted(names) if is_public(name)}


def _top_level_origins(module: ModuleType) -> dict[str, str]:
    """For each name bound at the top of the module's source: the module it comes from ("" when defined here)."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return {}
    bound: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    bound[target.id] = ""
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            bound[node.target.id] = ""
        elif isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports (the lazy package namespace)
            for inner in node.body:
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    for alias in inner.names:
                        bound.setdefault(alias.asname or alias.name, f"{inner.module}.{alias.name}")
    return bound


def _origin(module: ModuleType, name: str, obj: Any, depth: int = 0) -> str:
    """Where ``module.name`` is defined, as a dotted name."""
    if inspect.ismodule(obj):
        return obj.__name__
    if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__qualname__", "").isidentifier():
        return f"{obj.__module__}.{obj.__qualname__}"
    if depth < 10:  # data: follow `from X import name` to the module that assigns it
        source = _top_level_origins(module).get(name)
        if source:
            src_module, _, src_name = source.rpartition(".")
            try:
                return _origin(importlib.import_module(src_module), src_name, obj, depth + 1)
            except ImportError:
                pass
    return f"{module.__name__}.{name}"


def _kind(obj: Any) -> str:
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if callable(obj) and not hasattr(obj, "__origin__") and (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
        return "function"
    return "data"


def _names(module: ModuleType) -> list[str]:
    exported = getattr(module, "__all__", None)
    if exported is not None:
        return [name for name in exported if name != "__version__" or module.__name__ == PACKAGE]
    return sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module.__name__
    )


def collect() -> Api:
    """Every public module's names and the home of each object."""
    api = Api(modules=public_modules())
    for mod_name, module in api.modules.items():
        entries = []
        for name in _names(module):
            obj = getattr(module, name)
            entries.append(Entry(mod_name, name, obj, _origin(module, name, obj), _kind(obj)))
        api.entries[mod_name] = entries

    def defines_own(mod_name: str) -> bool:
        return any(
            e.origin.startswith(mod_name + ".") and e.origin.count(".") == mod_name.count(".") + 1
            for e in api.entries[mod_name]
        )

    def rank(mod_name: str) -> tuple[int, int, int, str]:
        is_package = hasattr(api.modules[mod_name], "__path__")
        return (mod_name.count("."), 0 if is_package else 1, 1 if defines_own(mod_name) else 0, mod_name)

    for mod_name in sorted(api.entries, key=rank):
        for entry in api.entries[mod_name]:
            if entry.kind == "module":
                api.home.setdefault(entry.origin, entry.origin)
            else:
                api.home.setdefault(entry.origin, f"{mod_name}.{entry.name}")
    for mod_name, entries in api.entries.items():
        api.alias[mod_name] = mod_name
        for entry in entries:
            home = api.home.get(entry.origin, entry.origin)
            api.alias[f"{mod_name}.{entry.name}"] = home
            api.alias.setdefault(entry.origin, home)
    return api


def _summary(obj: Any, alias: dict[str, str]) -> str:
    """The first paragraph of the docstring, its references resolved in the module that defines it."""
    doc = inspect.getdoc(obj) if (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)) else None
    if not doc:
        return ""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    module = obj if inspect.ismodule(obj) else sys.modules.get(getattr(obj, "__module__", "") or "")
    return Resolver(alias, module, obj if inspect.isclass(obj) else None).rewrite(first)


def _heading(text: str, char: str) -> str:
    return f"{text}\n{char * len(text)}\n"


def module_page(api: Api, mod_name: str) -> str:
    """The reST source of one module's page."""
    entries = api.entries[mod_name]
    lines = [
        f".. _api-{mod_name}:",
        "",
        _heading(f"``{mod_name}``", "="),
        f".. automodule:: {mod_name}",
        "   :no-members:",
        "",
    ]
    if entries:
        lines += [".. list-table::", "   :header-rows: 1", "   :widths: 30 70", "", "   * - name", "     - summary"]
        for entry in entries:
            if entry.kind == "module":
                target = f":py:mod:`{entry.name} <{entry.origin}>`"
                summary = f"the module :py:mod:`{entry.origin}`"
            else:
                home = api.home[entry.origin]
                target = f":py:obj:`{entry.name} <{home}>`"
                summary = _summary(entry.obj, api.alias)
                if not summary and entry.kind == "data" and len(repr(entry.obj)) <= 60:
                    summary = f"``{entry.obj!r}``"
                if home != f"{mod_name}.{entry.name}":
                    summary = f"(documented as :py:obj:`{home}`) {summary}".strip()
            lines += [f"   * - {target}", f"     - {summary or ' '}"]
        lines.append("")
    lines += [f".. currentmodule:: {mod_name}", ""]
    for entry in entries:
        if entry.kind == "module" or api.home[entry.origin] != f"{mod_name}.{entry.name}":
            continue
        if entry.kind == "class":
            lines += [f".. autoclass:: {entry.name}", "   :members:", "   :show-inheritance:", ""]
        elif entry.kind == "exception":
            lines += [f".. autoexception:: {entry.name}", "   :members:", "   :show-inheritance:", ""]
        elif entry.kind == "function":
            lines += [f".. autofunction:: {entry.name}", ""]
        else:
            lines += [f".. autodata:: {entry.name}", ""]
    return "\n".join(lines)


def index_page(api: Api) -> str:
    """The reST source of the API index: one line per module and the toctree of the module pages."""
    lines = [
        ".. _api-index:",
        "",
        _heading("API reference", "="),
        "Every public name of ``mlcl`` (the ``__all__`` of each public module), generated from the docstrings at "
        "each build. Each object is documented once, under the shortest import path that exports it; the "
        "other modules that export it link there.",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 30 70",
        "",
        "   * - module",
        "     - summary",
    ]
    for mod_name, module in api.modules.items():
        lines += [f"   * - :doc:`{mod_name} <{mod_name}>`", f"     - {_summary(module, api.alias) or ' '}"]
    lines += ["", ".. toctree::", "   :hidden:", ""]
    lines += [f"   {mod_name}" for mod_name in api.modules]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def generate(app: Sphinx) -> None:
    """Write docs/api/*.rst from the package (builder-inited)."""
    api = collect()
    app.env.mlcl_api_alias = api.alias  # type: ignore[attr-defined]
    out = Path(app.srcdir) / API_DIR
    out.mkdir(exist_ok=True)
    wanted = {"index.rst"} | {f"{name}.rst" for name in api.modules}
    for stale in out.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()
    _write(out / "index.rst", index_page(api))
    for mod_name in api.modules:
        _write(out / f"{mod_name}.rst", module_page(api, mod_name))
    LOG.info("api: %d modules, %d documented objects", len(api.modules), len(set(api.home.values())))


def _scope_lookup(scope: list[Any], dotted: str) -> Any:
    head, *rest = dotted.split(".")
    for namespace in scope:
        if head in namespace:
            obj = namespace[head]
            for part in rest:
                obj = getattr(obj, part)
            return obj
    raise LookupError(dotted)


def _import_dotted(dotted: str) -> bool:
    """Whether ``dotted`` names something that exists (a module, or attributes of one, or a dataclass field)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                obj = _member(obj, part)
        except AttributeError:
            return False
        return True
    return False


def _member(obj: Any, name: str) -> Any:
    """``getattr``, also finding a dataclass field or an annotated class attribute without a default."""
    if hasattr(obj, name):
        return getattr(obj, name)
    if inspect.isclass(obj) and any(name in getattr(k, "__annotations__", {}) for k in obj.__mro__):
        return None
    if inspect.isclass(obj) and name in _instance_attributes(obj):
        return None
    raise AttributeError(name)


def _instance_attributes(cls: type) -> set[str]:
    """The ``self.NAME = ...`` attributes that the methods of ``cls`` (and its bases) assign."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__ == "builtins":
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        names.update(re.findall(r"\bself\.([A-Za-z_]\w*)\s*(?::[^=\n]+)?=(?!=)", source))
    return names


class Resolver:
    """Resolve a docstring's cross-reference targets as Python resolves names in the docstring's module."""

    def __init__(self, alias: dict[str, str], module: ModuleType | None, owner: Any = None) -> None:
        self.alias = alias
        self.module = module
        self.owner = owner if inspect.isclass(owner) else None

    def _origin_home(self, origin: str) -> str | None:
        if origin in self.alias:
            return self.alias[origin]
        parent, _, last = origin.rpartition(".")  # a member of a documented class: the class's home + the member
        if parent in self.alias and parent.count(".") > 0:
            return f"{self.alias[parent]}.{last}"
        return None

    def home(self, target: str) -> tuple[str | None, bool]:
        """The documented name of ``target`` (or None) and whether ``target`` exists at all."""
        target = target.lstrip(".")
        if target in self.alias:
            return self.alias[target], True
        module_name = self.module.__name__ if self.module else ""
        if self.owner is not None:
            owner_origin = f"{self.owner.__module__}.{self.owner.__qualname__}"
            try:
                member = _member(self.owner, target.split(".")[0])
            except AttributeError:
                member = None
            else:
                origin = f"{getattr(member, '__module__', '')}.{getattr(member, '__qualname__', '')}"
                home = self._origin_home(origin) if inspect.isroutine(member) or inspect.isclass(member) else None
                return home or self._origin_home(f"{owner_origin}.{target}"), True
        if f"{module_name}.{target}" in self.alias:
            return self.alias[f"{module_name}.{target}"], True
        scope = [vars(self.module), self._type_checking_names()] if self.module is not None else []
        try:
            found = _scope_lookup(scope, target)
        except (LookupError, AttributeError):
            # a dataclass field without a default is not an attribute of its class
            parent, _, last = target.rpartition(".")
            try:
                cls = _scope_lookup(scope, parent) if parent else None
                _member(cls, last)
            except (LookupError, AttributeError):
                return None, _import_dotted(target)
            parent_home, _ = self.home(parent)
            return (f"{parent_home}.{last}" if parent_home else None), True
        if inspect.ismodule(found):
            return self.alias.get(found.__name__), True
        if inspect.isclass(found) or inspect.isroutine(found):
            origin = f"{found.__module__}.{found.__qualname__}"
            home = self._origin_home(origin)
            if home:
                return home, True
        parent, _, last = target.rpartition(".")
        if parent:
            parent_home, _ = self.home(parent)
            return (f"{parent_home}.{last}" if parent_home else None), True
        return None, True

    def _type_checking_names(self) -> dict[str, Any]:
        """Names imported under ``if TYPE_CHECKING:`` (what a type checker sees in the module)."""
        names: dict[str, Any] = {}
        for name, source in _top_level_origins(self.module).items():
            if source and name not in vars(self.module):
                src_module, _, src_name = source.rpartition(".")
                try:
                    names[name] = getattr(importlib.import_module(src_module), src_name)
                except (ImportError, AttributeError):
                    continue
        return names

    _ROLE = re.compile(r":(?:py:)?(func|class|meth|attr|data|obj|exc|mod|const|type):`(~?)([^`]+?)`")

    def rewrite(self, text: str) -> str:
        """Point each role at the documented name; a name that exists but is not documented becomes code."""

        def repl(match: re.Match[str]) -> str:
            role, tilde, inner = match.groups()
            inner = re.sub(r"\s*\n\s*", "", inner)  # a reference broken over two lines
            title, target = None, inner
            explicit = re.fullmatch(r"(.*?)\s*<([^<>]+)>", inner, flags=re.S)
            if explicit:
                title, target = explicit.group(1), explicit.group(2)
            home, exists = self.home(target.strip())
            shown = title or (target.rpartition(".")[2] if tilde else target.lstrip("."))
            if home:
                return f":py:{role}:`{shown} <{home}>`"
            if exists:
                return f"``{shown}``"
            return match.group(0)

        return self._ROLE.sub(repl, text)


def resolve_docstring_refs(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Rewrite each cross-reference of a docstring to the documented name of what it names (autodoc hook)."""
    if what in ("data", "attribute") and not (inspect.isclass(obj) or inspect.isroutine(obj)):
        type_doc = inspect.getdoc(type(obj)) or ""
        if lines and "\n".join(lines).strip() == type_doc.strip():
            lines[:] = []  # a value without its own docstring: not its type's (dict's, int's) docstring
            return
    alias: dict[str, str] = getattr(app.env, "mlcl_api_alias", {})
    if what == "module":
        module = obj
    else:
        module = sys.modules.get(getattr(obj, "__module__", None) or "")
        if module is None or what in ("data", "attribute"):  # data has no __module__: the documented module
            module = sys.modules.get(name.rpartition(".")[0]) or module
    owner = obj if inspect.isclass(obj) else None
    if what in ("method", "attribute", "property", "classmethod", "staticmethod"):
        owner_path = name.rpartition(".")[0]
        owner = None
        for cut in range(owner_path.count("."), 0, -1):
            mod_name = owner_path.rsplit(".", owner_path.count(".") - cut + 1)[0]
            if mod_name in sys.modules:
                try:
                    owner = _scope_lookup([vars(sys.modules[mod_name])], owner_path[len(mod_name) + 1 :])
                except (LookupError, AttributeError):
                    owner = None
                if owner is not None:
                    module = sys.modules.get(owner.__module__, module)
                break
    text = Resolver(alias, module, owner).rewrite("\n".join(lines))
    lines[:] = text.split("\n")


def missing_reference(app: Sphinx, env: Any, node: Any, contnode: Any) -> Any:
    """A reference under another name of a documented object, or to an existing name outside the API.

    A target that names nothing (a typo, a removed or renamed object) is left unresolved: the strict build fails.
    """
    if node.get("refdomain") != "py":
        return None
    alias: dict[str, str] = getattr(env, "mlcl_api_alias", {})
    target = node["reftarget"].lstrip(".~")
    candidates = [target]
    if node.get("py:class") and node.get("py:module"):
        candidates.insert(0, f"{node['py:module']}.{node['py:class']}.{target}")
    if node.get("py:module"):
        candidates.insert(0, f"{node['py:module']}.{target}")
    for candidate in candidates:
        home = alias.get(candidate)
        if home and home != node["reftarget"]:
            domain = env.get_domain("py")
            found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], home, node, contnode)
            if found is not None:
                return found
    if any(_import_dotted(candidate) for candidate in candidates if candidate.startswith(PACKAGE + ".")):
        return contnode  # exists, but not part of the documented API: shown as code, not linked
    return None


def dataclass_defaults(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, signature: str | None, annotation: str | None
) -> tuple[str | None, str | None] | None:
    """Show a dataclass field's ``default_factory`` as a call (``dict()``) instead of ``<factory>``.

    ``<factory>`` is not a Python expression, so Sphinx falls back to splitting the signature at every comma,
    which breaks annotations such as ``dict[str, Any]``.
    """
    if not signature or "<factory>" not in signature or not dataclasses.is_dataclass(obj):
        return None
    for f in dataclasses.fields(obj):
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            factory = getattr(f.default_factory, "__name__", "factory")  # type: ignore[misc]
            signature = signature.replace("<factory>", f"{factory}()", 1)
    return signature, annotation


def _plain_attribute_docstring(self: Any) -> list[str]:
    """Napoleon reads "type: text" on an attribute's first line; mlcl's data docstrings start with prose."""
    return list(self._consume_to_end())


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the page generator and the reference resolvers."""
    app.connect("builder-inited", generate)
    app.connect("autodoc-process-docstring", resolve_docstring_refs)
    app.connect("missing-reference", missing_reference)
    app.connect("autodoc-process-signature", dataclass_defaults)
    # the types come from the annotations; the first line of a data docstring is prose ("``train.amp``: ...")
    from sphinx.ext.napoleon.docstring import GoogleDocstring

    GoogleDocstring._parse_attribute_docstring = _plain_attribute_docstring  # type: ignore[method-assign]
    return {"parallel_read_safe": True, "parallel_write_safe": True}
