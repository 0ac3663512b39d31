"""Imports point one way: no cycles in the playground, and providers stands on its own.

Read from the source with `ast`, so imports inside functions count too: a function-level
import hides a cycle from Python at start-up, not from the reader.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Plain Python on purpose (see their docstrings): usable and testable without settings.
DJANGO_FREE = {
    "playground.providers.client",
    "playground.providers.params",
    "playground.providers.specs",
    "playground.providers.sse",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((ROOT / "playground").rglob("*.py"))}


@functools.cache
def imports_of(name: str) -> frozenset[str]:
    """Every module `name` imports, anywhere in the file, as absolute dotted names."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                # `from package import module` imports the module; otherwise a name in base.
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules() else base)
    found.discard(name)
    return frozenset(found)


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def playground_imports(name: str) -> set[str]:
    return {imported for imported in imports_of(name) if imported in modules()}


def find_cycle() -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return None
        for imported in sorted(playground_imports(name)):
            cycle = visit(imported, [*path, name])
            if cycle:
                return cycle
        done.add(name)
        return None

    for name in modules():
        cycle = visit(name, [])
        if cycle:
            return cycle
    return None


def test_the_layout_reader_sees_imports_inside_functions() -> None:
    # catalog loads the CustomEndpoint model inside a function; apps.py imports it there too.
    assert "playground.providers.models" in imports_of("playground.providers.catalog")
    assert "playground.providers.models" in imports_of("playground.providers.apps")
    assert "django.conf" in imports_of("playground.providers.catalog")


def test_no_modules_import_each_other_even_through_others() -> None:
    cycle = find_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_providers_imports_nothing_else_of_the_playground() -> None:
    outside = {
        f"{name} imports {imported}"
        for name in modules()
        if within(name, "playground.providers")
        for imported in imports_of(name)
        if within(imported, "playground") and not within(imported, "playground.providers")
    }
    assert outside == set()


def test_specs_client_sse_and_params_need_no_django() -> None:
    reached, todo = set(), list(DJANGO_FREE)
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(playground_imports(name))
    django = {
        f"{name} imports {imported}"
        for name in reached
        for imported in imports_of(name)
        if within(imported, "django")
    }
    assert django == set()


# The Wave 2 domains plug into chat, accounts and providers, never the other way round.
DOMAINS = ("playground.review", "playground.prompts", "playground.experiments")
FOUNDATIONS = ("playground.chat", "playground.accounts", "playground.providers")


def test_chat_accounts_and_providers_import_none_of_the_domains_built_on_them() -> None:
    backwards = {
        f"{name} imports {imported}"
        for name in modules()
        if any(within(name, base) for base in FOUNDATIONS)
        for imported in imports_of(name)
        if any(within(imported, domain) for domain in DOMAINS)
    }
    assert backwards == set()


def python_files_outside_playground() -> list[Path]:
    return [
        path for folder in ("tests", "bench") for path in sorted((ROOT / folder).rglob("*.py"))
    ] + [ROOT / "manage.py"]


def test_only_url_maps_import_a_views_module() -> None:
    views = {name for name in modules() if name.endswith(".views")}
    importers = {name: imports_of(name) for name in modules()}
    for path in python_files_outside_playground():
        tree = ast.parse(path.read_text(), str(path))
        found = {
            alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        importers[str(path.relative_to(ROOT))] = frozenset(found)
    offenders = {
        f"{name} imports {imported}"
        for name, imported_names in importers.items()
        if not name.endswith("urls")
        for imported in imported_names & views
    }
    assert offenders == set()


def test_each_domain_app_is_installed_and_mounted(settings) -> None:
    from django.urls import URLResolver, get_resolver

    for domain in DOMAINS:
        assert domain in settings.INSTALLED_APPS
        for part in ("models", "views", "urls"):
            assert f"{domain}.{part}" in modules()
        assert (ROOT / "templates" / domain.rpartition(".")[2]).is_dir()
    mounted = {
        str(entry.pattern): entry.app_name
        for entry in get_resolver().url_patterns
        if isinstance(entry, URLResolver)
    }
    for domain in DOMAINS:
        app = domain.rpartition(".")[2]
        assert mounted.get(f"{app}/") == app
