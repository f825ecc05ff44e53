"""roomcast.js and roomcast-react.js as a TypeScript app sees them: their declarations
type-check code that uses every method and hook (and refuse misuses), roomcast.js imports
nothing, roomcast-react.js imports only React, and roomcast.js stays small."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from tests.browser.jstools import JS_DIR, ROOT, STATIC, esbuild, run

SIZE_BUDGET = 8 * 1024  # bytes of roomcast.js minified and gzipped


def test_the_declarations_type_check_a_sample_using_every_method_and_hook() -> None:
    """tsc --noEmit over tests/js (sample.tsx, the React test page): also fails when one of
    the sample's `@ts-expect-error` misuses is accepted."""
    done = run("tsc", "--noEmit", "-p", JS_DIR)
    assert done.returncode == 0, done.stdout.decode(errors="replace")


def test_the_react_example_in_docs_clients_md_type_checks(tmp_path: Path) -> None:
    """The docs' React component compiles against the declarations, as an app would see it."""
    text = (ROOT / "docs" / "clients.md").read_text()
    (example,) = re.findall(r"```tsx\n(.*?)```", text, flags=re.DOTALL)
    source = example.replace('"./roomcast/', f'"{STATIC}/')
    assert source != example, "the example no longer imports from ./roomcast/"
    (tmp_path / "example.tsx").write_text(source)
    (tmp_path / "tsconfig.json").write_text(json.dumps(
        {"extends": str(JS_DIR / "tsconfig.json"), "include": [str(tmp_path / "example.tsx")]}))
    done = run("tsc", "--noEmit", "-p", tmp_path)
    assert done.returncode == 0, done.stdout.decode(errors="replace")


def exported_values(path: Path) -> set[str]:
    """Names of the constants, functions and classes a module (or its declarations) exports."""
    pattern = r"^export (?:declare )?(?:const|function|class) (\w+)"
    return set(re.findall(pattern, path.read_text(), flags=re.MULTILINE))


def test_the_declarations_name_exactly_what_the_modules_export() -> None:
    for module in ("roomcast", "roomcast-react"):
        declared = exported_values(STATIC / f"{module}.d.ts")
        assert declared == exported_values(STATIC / f"{module}.js"), module
    assert {"RoomcastClient", "backoffDelay", "STOP_CODES"} <= exported_values(
        STATIC / "roomcast.js")
    assert exported_values(STATIC / "roomcast-react.js") == {
        "RoomcastProvider", "useRoomcast", "useRoom"}


def bundle_inputs(entry: Path, tmp_path: Path, *external: str) -> tuple[set[str], list[str]]:
    """The files esbuild bundles from `entry`, and the imports it leaves to the page."""
    meta = tmp_path / "meta.json"
    esbuild(entry, "--bundle", "--format=esm", f"--metafile={meta}",
            f"--outfile={tmp_path / 'out.js'}", *(f"--external:{name}" for name in external))
    info = json.loads(meta.read_text())
    inputs = {Path(name).name for name in info["inputs"]}
    (output,) = info["outputs"].values()
    return inputs, sorted(item["path"] for item in output["imports"])


def test_roomcast_js_has_no_runtime_dependency(tmp_path: Path) -> None:
    assert bundle_inputs(STATIC / "roomcast.js", tmp_path) == ({"roomcast.js"}, [])


def test_roomcast_react_js_imports_react_and_roomcast_js_only(tmp_path: Path) -> None:
    inputs, imports = bundle_inputs(STATIC / "roomcast-react.js", tmp_path, "react")
    assert inputs == {"roomcast-react.js", "roomcast.js"}
    assert imports == ["react"]


def test_roomcast_js_minified_and_gzipped_stays_within_its_budget() -> None:
    minified = esbuild(STATIC / "roomcast.js", "--minify", "--format=esm")
    size = len(gzip.compress(minified, compresslevel=9))
    assert size <= SIZE_BUDGET, f"roomcast.js is {size} bytes minified and gzipped"
