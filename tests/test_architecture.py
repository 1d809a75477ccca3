"""The package's structure (docs/architecture.md): registries, one home per fact, no import circles."""
import ast
from pathlib import Path

import pytest

from darknet_prn import graph, modules
from darknet_prn.registry import Registry

PKG = Path(__file__).resolve().parents[1] / "darknet_prn"


def test_registering_a_name_twice_is_an_error():
    reg = Registry("test table")
    reg.register("a", "b")(len)
    assert reg["a"] is len and reg["b"] is len
    with pytest.raises(ValueError, match="test table: 'b' is registered twice"):
        reg.register("b")(abs)
    with pytest.raises(ValueError, match="registered twice"):
        reg["a"] = abs
    assert reg["b"] is len


def test_every_parsed_layer_type_has_a_reference_module():
    import darknet_prn.model  # noqa: F401  (the package's registrations are complete once the model is importable)
    assert set(graph.PARSERS) == set(modules.BUILDERS)


def _imports(path: Path):
    """(module names imported anywhere in the file, private names imported from sibling modules)."""
    tree = ast.parse(path.read_text())
    mods, private = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                mods.add(node.module.split(".")[0])
                private += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
            else:
                mods.update(a.name for a in node.names)
    return mods, private


def _package_imports():
    return {p.stem: _imports(p) for p in PKG.glob("*.py")}


# the layer-graph side and every backend of it (reference modules, plan, export, engines, decoding, conversion)
LAYER_MODULES = ("cfg", "graph", "geometry", "heads", "registry", "activations", "modules", "recurrent", "model",
                 "weights", "fast", "engines", "export", "export_cli", "postprocess", "preprocess", "convert",
                 "summary", "detect")


def test_no_backend_imports_a_private_name_of_another_module():
    imports = _package_imports()
    assert set(LAYER_MODULES) <= set(imports)
    bad = {name: imports[name][1] for name in LAYER_MODULES if imports[name][1]}
    assert not bad


def test_no_import_circles():
    """Every relative import, top-level or deferred inside a function, counts: a circle is a circle either way."""
    deps = {name: mods - {name} for name, (mods, _) in _package_imports().items()}
    deps.pop("__init__", None)          # the package itself: imports its public API lazily
    for d in deps.values():
        d.discard("__version__")
    cycles = []

    def visit(node, stack):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in done:
            return
        for nxt in sorted(deps.get(node, ())):
            visit(nxt, stack + [node])
        done.add(node)
    done = set()
    for n in sorted(deps):
        visit(n, [])
    assert not cycles


def test_every_parsed_activation_has_each_form():
    from darknet_prn import activations
    parsed = set(graph.ACTIVATIONS) - set(graph.ACTIVATION_ALIASES)
    assert parsed == set(activations.TABLE)
    import torch
    x = torch.linspace(-30, 30, 600).view(1, 3, -1, 1)
    for name, form in activations.TABLE.items():
        ref = form.ref(x)
        for variant in (activations.activate_inplace(x.clone(), name), activations.onnx_activate(x, name)):
            torch.testing.assert_close(variant, ref, rtol=1e-5, atol=1e-5, msg=name)


def test_activation_table_check_names_the_missing_entry(monkeypatch):
    from darknet_prn import activations
    monkeypatch.setattr(activations, "ACTIVATIONS", tuple(graph.ACTIVATIONS) + ("softsign",))
    with pytest.raises(ImportError, match=r"missing \['softsign'\]"):
        activations._check_table()


def test_unknown_activation_warns_and_runs_as_darknet_does():
    """Darknet's get_activation falls back to relu, printing a message: we warn with the cfg's file:line."""
    from darknet_prn.cfg import CfgWarning
    with pytest.warns(CfgWarning, match=r"t\.cfg:6: unknown activation 'softsign', Darknet uses relu"):
        net = graph.network_from_text("[net]\nwidth=4\nheight=4\nchannels=1\n[convolutional]\nactivation=softsign\n",
                                      path="t.cfg")
    assert net.layers[0].p["activation"] == "relu"
