#!/usr/bin/env python3
"""Checks that every program a run executed comes from a Debian package that a
bare Debian 12 (minbase) has, or that deploy/install-deps.sh installs, or that
one of those depends on.

The run is recorded by .ci/run: `perf record -a` of the scheduler's
sched_process_fork and sched_process_exec tracepoints while deploy/test.sh
runs, and the pid it started with. This script follows the process tree from
that pid (forks in time order, so a reused pid leaves the tree), takes every
file its processes executed, and finds the package that owns it in dpkg's
database. A program of the repository's own (a built binary, a script) is
fine; for a script its interpreter is checked instead. A program that no
package owns, or whose package a bare machine would not get, fails the check:
a green CI on a machine with extra packages must not hide a missing install
step (README, "Tests").

    deploy/check-deps.py --trace DIR [--repo DIR] [--install-deps FILE]

DIR holds perf.data and root (the pid). Exit status 0: all accounted for;
1: a program from outside the allowed packages (each one listed); 2: the
trace could not be read.
"""

import argparse
import glob
import os
import re
import subprocess
import sys

DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_INFO = "/var/lib/dpkg/info"


def read_install_deps(path):
    """The package names in the PACKAGES=( ... ) array of install-deps.sh."""
    text = open(path, encoding="utf-8").read()
    match = re.search(r"^PACKAGES=\((.*?)^\)", text, re.S | re.M)
    if not match:
        raise SystemExit(f"check-deps: no PACKAGES=( ... ) in {path}")
    names = []
    for line in match.group(1).splitlines():
        line = line.split("#", 1)[0]
        names.extend(line.split())
    return names


def read_dpkg_status():
    """Installed packages: name -> fields (Priority, Essential, Depends, ...)."""
    packages = {}
    with open(DPKG_STATUS, encoding="utf-8", errors="replace") as f:
        for stanza in f.read().split("\n\n"):
            fields, key = {}, None
            for line in stanza.splitlines():
                if line.startswith((" ", "\t")) and key:
                    fields[key] += " " + line.strip()
                elif ":" in line:
                    key, value = line.split(":", 1)
                    fields[key] = value.strip()
            if fields.get("Package") and fields.get("Status", "").endswith(" installed"):
                packages[fields["Package"]] = fields
    return packages


def dependency_names(field):
    """Alternatives per dependency: "a (>= 1) | b, c:any" -> [["a", "b"], ["c"]]."""
    groups = []
    for dep in filter(None, (d.strip() for d in field.split(","))):
        alts = []
        for alt in dep.split("|"):
            name = alt.strip().split(" ", 1)[0].split(":", 1)[0]
            if name:
                alts.append(name)
        groups.append(alts)
    return groups


def allowed_packages(installed, roots):
    """What a bare machine holds after install-deps.sh: minbase (priority
    required, essential), apt, the listed packages, and what they depend on,
    following the installed choice of each alternative or virtual package."""
    providers = {}
    for name, fields in installed.items():
        providers.setdefault(name, set()).add(name)
        for group in dependency_names(fields.get("Provides", "")):
            for virtual in group:
                providers.setdefault(virtual, set()).add(name)
    todo = list(roots) + ["apt"]
    todo += [n for n, f in installed.items()
             if f.get("Priority") == "required" or f.get("Essential") == "yes"]
    allowed = set()
    while todo:
        name = todo.pop()
        for pkg in providers.get(name, ()):
            if pkg in allowed:
                continue
            allowed.add(pkg)
            fields = installed[pkg]
            for key in ("Pre-Depends", "Depends"):
                for group in dependency_names(fields.get(key, "")):
                    for alt in group:
                        todo.append(alt)
    return allowed


def file_owners():
    """Path -> package, from dpkg's file lists (package names without :arch)."""
    owners = {}
    for listing in glob.glob(os.path.join(DPKG_INFO, "*.list")):
        package = os.path.basename(listing)[: -len(".list")].split(":", 1)[0]
        with open(listing, encoding="utf-8", errors="replace") as f:
            for line in f:
                owners.setdefault(line.rstrip("\n"), package)
    return owners


MAINTAINER_SCRIPTS = (".preinst", ".postinst", ".prerm", ".postrm", ".config")


def owner_of(path, owners):
    """The package of `path`, also through the /usr merge and symlinks
    (alternatives), or None. A maintainer script dpkg runs
    (/var/lib/dpkg/info/<package>[:arch].postinst, ...) is its package's."""
    if path.startswith(DPKG_INFO + "/") and path.endswith(MAINTAINER_SCRIPTS):
        return os.path.basename(path).rsplit(".", 1)[0].split(":", 1)[0]
    candidates = [path]
    for short, merged in (("/bin/", "/usr/bin/"), ("/sbin/", "/usr/sbin/"),
                          ("/lib/", "/usr/lib/"), ("/lib64/", "/usr/lib64/")):
        if path.startswith(merged):
            candidates.append(short + path[len(merged):])
        elif path.startswith(short):
            candidates.append(merged + path[len(short):])
    real = os.path.realpath(path)
    if real != path:
        candidates.append(real)
        for short, merged in (("/bin/", "/usr/bin/"), ("/sbin/", "/usr/sbin/"),
                              ("/lib/", "/usr/lib/")):
            if real.startswith(merged):
                candidates.append(short + real[len(merged):])
    for candidate in candidates:
        if candidate in owners:
            return owners[candidate]
    return None


def executed_files(trace_dir):
    """Every file the recorded run's process tree executed, in first-seen order."""
    root = int(open(os.path.join(trace_dir, "root"), encoding="utf-8").read().strip())
    result = subprocess.run(
        ["perf", "script", "-i", os.path.join(trace_dir, "perf.data"), "-F", "pid,event,trace"],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"perf script: {result.stderr.strip()}")
    members, files = {root}, {}
    fork = re.compile(r"^\s*(\d+)\s+sched:sched_process_fork:.* pid=(\d+) .*child_pid=(\d+)")
    execd = re.compile(r"^\s*(\d+)\s+sched:sched_process_exec: filename=(.*) pid=(\d+) old_pid=")
    for line in result.stdout.splitlines():
        m = fork.match(line)
        if m:
            parent, child = int(m.group(2)), int(m.group(3))
            if parent in members:
                members.add(child)
            else:
                members.discard(child)  # a pid reused outside the tree
            continue
        m = execd.match(line)
        if m and int(m.group(3)) in members:
            files.setdefault(m.group(2), 0)
            files[m.group(2)] += 1
    lost = re.findall(r"(\d+) lost", result.stderr)
    return files, sum(int(n) for n in lost)


def interpreter_of(path):
    """The program a script's #! line runs (`/usr/bin/env bash` -> bash's path)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(256).decode("utf-8", "replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env" and len(words) > 1:
        found = [os.path.join(d, words[1]) for d in os.environ.get("PATH", "").split(":")
                 if d and os.access(os.path.join(d, words[1]), os.X_OK)]
        return [words[0]] + found[:1]
    return [words[0]]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", required=True, help="directory with perf.data and root")
    parser.add_argument("--repo", default=os.path.dirname(here), help="the repository")
    parser.add_argument("--install-deps", default=os.path.join(here, "install-deps.sh"))
    args = parser.parse_args()
    repo = os.path.realpath(args.repo)

    try:
        files, lost = executed_files(args.trace)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"check-deps: cannot read the trace in {args.trace}: {e}", file=sys.stderr)
        return 2
    installed = read_dpkg_status()
    listed = read_install_deps(args.install_deps)
    allowed = allowed_packages(installed, listed)
    owners = file_owners()

    ours, elsewhere, by_package, failures = [], [], {}, []
    queue = list(files)
    seen = set()
    while queue:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        if not path.startswith("/") or not os.path.exists(path):
            # Relative paths are the tests' own binaries (run from the build
            # dir); absolute ones that are gone lived in a test's own root.
            elsewhere.append(path)
            continue
        package = owner_of(path, owners)
        if package is None:
            real = os.path.realpath(path)
            if real.startswith(repo + "/") or path.startswith(repo + "/"):
                ours.append(path)
                queue.extend(interpreter_of(real) or [])
            else:
                failures.append(f"{path}: no Debian package owns it")
            continue
        by_package.setdefault(package, []).append(path)
        if package not in allowed:
            failures.append(f"{path}: from package '{package}', which a bare Debian 12 does not "
                            f"have and deploy/install-deps.sh does not install (add it there)")

    print(f"check-deps: {len(files)} programs executed ({sum(files.values())} times); "
          f"{len(by_package)} packages, {len(ours)} of the repository's own, "
          f"{len(elsewhere)} not on this host (a test's own root, relative, or removed)")
    for package in sorted(by_package):
        mark = "ok " if package in allowed else "BAD"
        names = ", ".join(sorted(os.path.basename(p) for p in by_package[package]))
        print(f"  {mark} {package}: {names}")
    if lost:
        print(f"check-deps: the trace lost {lost} events: a program may be missing from it",
              file=sys.stderr)
    if failures:
        for failure in failures:
            print(f"check-deps: {failure}", file=sys.stderr)
        return 1
    print("check-deps: every program comes from a package a bare machine gets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
