"""Check a plugin zip against the rules the QGIS plugin repository (plugins.qgis.org)
applies on upload, before uploading it.

The rules, as the repository's validator states them: at most 25 MB; one top-level
folder whose name is a Python identifier; ``__init__.py``, ``metadata.txt`` (a
``[general]`` section, UTF-8) and ``LICENSE`` inside it; the required metadata fields;
well-formed tracker / repository / homepage URLs; an author without slashes; no compiled
files (``.pyc``), no ``__pycache__``, ``.git`` or ``__MACOSX`` folders, no paths that
climb out (``..``), start at the root, hold backslashes or drive letters; every member
readable (CRC). The repository also fetches each URL; that needs the network and is left
to the upload (``--links`` tries it here).

Placeholder addresses (example.org and the like) pass the repository's checks but tell
users nothing: they are reported as warnings.

Usage: python scripts/check_plugin_zip.py [ZIP] [--links]   (default: out/tilelabel.zip)
Exit code 0 when the zip passes, 1 when it breaks a rule.
"""
from __future__ import annotations

import configparser
import re
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlparse

MAX_BYTES = 25_000_000
REQUIRED = ("name", "description", "version", "qgisMinimumVersion", "author", "email",
            "about", "tracker", "repository")
URL_FIELDS = {"tracker": "http://bugs", "repository": "http://repo", "homepage": "http://homepage"}
FORBIDDEN_FOLDERS = ("__MACOSX", ".git", "__pycache__")
PLACEHOLDER_HOSTS = re.compile(r"(^|\.)example\.(org|com|net)$|^localhost$")


def _member_problems(names: list[str]) -> list[str]:
    problems = []
    for name in names:
        parts = name.split("/")
        if ".." in parts or name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
            problems.append(f"{name}: a path the repository refuses (.., /, \\ or a drive)")
        if name.endswith(".pyc"):
            problems.append(f"{name}: compiled Python files are refused")
        for folder in FORBIDDEN_FOLDERS:
            if folder in parts:
                problems.append(f"{name}: a '{folder}' folder is refused")
    return problems


def _metadata(z: zipfile.ZipFile, folder: str) -> tuple[dict[str, str], list[str]]:
    try:
        text = z.read(f"{folder}/metadata.txt").decode("utf-8")
    except KeyError:
        return {}, [f"{folder}/metadata.txt is missing"]
    except UnicodeDecodeError:
        return {}, ["metadata.txt is not UTF-8"]
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # field names are case-sensitive (qgisMinimumVersion)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        return {}, [f"metadata.txt cannot be parsed: {exc}"]
    if not parser.has_section("general"):
        return {}, ["metadata.txt has no [general] section"]
    return dict(parser.items("general")), []


def _url_findings(meta: dict[str, str]) -> tuple[list[str], list[str]]:
    errors, warnings = [], []
    for field, forbidden in URL_FIELDS.items():
        url = meta.get(field)
        if url is None:
            continue  # a missing required one is reported with the other fields
        parsed = urlparse(url)
        if url == forbidden or not (parsed.scheme and parsed.netloc):
            errors.append(f"metadata {field}: '{url}' is not a valid URL")
        elif PLACEHOLDER_HOSTS.search(parsed.hostname or ""):
            warnings.append(f"metadata {field}: '{url}' is a placeholder; set the project's "
                            "real address before uploading")
    return errors, warnings


def check(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of the zip at ``path``; no errors means the repository's
    offline checks pass."""
    errors: list[str] = []
    if path.stat().st_size > MAX_BYTES:
        errors.append(f"{path.stat().st_size:,} bytes: over the repository's "
                      f"{MAX_BYTES:,}-byte limit")
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        return errors + [f"{path} is not a zip file"], []
    with z:
        names = z.namelist()
        errors += _member_problems(names)
        bad = z.testzip()
        if bad:
            errors.append(f"{bad}: unreadable (CRC error)")
        folders = sorted({n.split("/")[0] for n in names})
        if len(folders) != 1 or "/" not in names[0]:
            return errors + [f"the zip must hold one top-level folder (it holds {folders})"], []
        folder = folders[0]
        if not folder.isidentifier():
            errors.append(f"folder '{folder}': must be a Python identifier (letters, digits, _)")
        for required in ("__init__.py", "LICENSE"):
            if f"{folder}/{required}" not in names:
                errors.append(f"{folder}/{required} is missing")
        meta, problems = _metadata(z, folder)
        errors += problems
        icon = meta.get("icon", "").removeprefix("./")
        if icon and f"{folder}/{icon}" not in names:
            errors.append(f"metadata icon: {folder}/{icon} is not in the zip")
    errors += [f"metadata.txt lacks the required field '{f}'" for f in REQUIRED
               if meta and not meta.get(f, "").strip()]
    if "/" in meta.get("author", ""):
        errors.append("metadata author: must not contain slashes")
    url_errors, warnings = _url_findings(meta)
    return errors + url_errors, warnings


def check_links(meta_urls: list[str]) -> list[str]:
    """The URLs that do not answer (needs the network)."""
    from urllib.request import Request, urlopen

    dead = []
    for url in meta_urls:
        try:
            with urlopen(Request(url, method="HEAD"), timeout=10) as response:
                if response.status >= 400:
                    dead.append(url)
        except OSError:
            dead.append(url)
    return dead


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    path = Path(args[0]) if args else Path(__file__).resolve().parents[1] / "out" / "tilelabel.zip"
    errors, warnings = check(path)
    if "--links" in argv and not errors:
        with zipfile.ZipFile(path) as z:
            meta, _ = _metadata(z, z.namelist()[0].split("/")[0])
        errors += [f"{u}: does not answer" for u in check_links(
            [meta[f] for f in URL_FIELDS if meta.get(f)])]
    for line in errors:
        print(f"error: {line}")
    for line in warnings:
        print(f"warning: {line}")
    print(f"{path}: {'breaks the repository rules' if errors else 'passes the repository checks'}"
          f" ({len(errors)} error(s), {len(warnings)} warning(s))")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
