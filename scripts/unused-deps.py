#!/usr/bin/env python3
"""Finds declared dependencies that no source file uses (what cargo-machete
does, without a tool to install): a normal dependency must be named in the
package's src/ (or build.rs), a dev-dependency in its tests, benches,
examples or #[cfg(test)] code, and every [workspace.dependencies] entry by
some member.

Exit status 1 and one line per unused dependency when there are any.
"""

import json
import pathlib
import re
import subprocess
import sys
import tomllib


def rust_files(root: pathlib.Path, parts):
    for part in parts:
        base = root / part
        if base.is_file():
            yield base
        elif base.is_dir():
            yield from base.rglob("*.rs")


def mentions(files, crate: str, test_code_only: bool = False) -> bool:
    word = re.compile(rf"\b{re.escape(crate)}\b")
    for f in files:
        text = f.read_text(errors="replace")
        if test_code_only and "/src/" in str(f):
            # In library code, only what follows #[cfg(test)] is test code.
            cut = text.find("#[cfg(test)]")
            text = text[cut:] if cut >= 0 else ""
        if word.search(text):
            return True
    return False


def main() -> int:
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    root = pathlib.Path(meta["workspace_root"])
    unused = []
    used_anywhere = set()
    for package in meta["packages"]:
        pkg_root = pathlib.Path(package["manifest_path"]).parent
        src = list(rust_files(pkg_root, ["src", "build.rs"]))
        everything = list(rust_files(pkg_root, ["src", "build.rs", "tests", "benches", "examples"]))
        for dep in package["dependencies"]:
            used_anywhere.add(dep["name"])
            crate = (dep.get("rename") or dep["name"]).replace("-", "_")
            dev = dep["kind"] == "dev"
            files = everything if dev else src
            if not mentions(files, crate, test_code_only=dev):
                kind = "dev-dependency" if dep["kind"] == "dev" else "dependency"
                unused.append(f"{package['name']}: {kind} {dep['name']} is never used")
    manifest = tomllib.loads((root / "Cargo.toml").read_text())
    for name in manifest.get("workspace", {}).get("dependencies", {}):
        if name not in used_anywhere:
            unused.append(f"workspace: {name} is declared but no member uses it")
    for line in unused:
        print(line)
    return 1 if unused else 0


if __name__ == "__main__":
    sys.exit(main())
