#!/usr/bin/env python3
"""Caps a minimised corpus at N files, keeping the inputs that matter most.

After `cargo fuzz cmin <target> -- -use_counters=0` the corpus keeps every covered
edge, but most of its files are byte strings prost refuses (each decode-error path of
each field is its own edge). This keeps every file that decodes (they reach the
validation), then adds the refused ones that cover the most edges not yet covered,
until N files. Usage, from this folder, after building the targets:

    ./cap_corpus.py solve_request 200

It runs the target binary once (-merge=1 with a control file, to learn each file's
edges) and `cargo run --example corpus -- verdict` once, then deletes the files it
does not keep from corpus/<target>/ and prints what it kept.
"""
import os, subprocess, sys, tempfile

target, cap = sys.argv[1], int(sys.argv[2])
corpus = os.path.join("corpus", target)
binary = os.path.join("target", "x86_64-unknown-linux-gnu", "release", target)
tmp = tempfile.mkdtemp()
control = os.path.join(tmp, "control")
os.makedirs(os.path.join(tmp, "out"))
subprocess.run([binary, "-merge=1", "-use_counters=0", f"-merge_control_file={control}",
                os.path.join(tmp, "out"), corpus],
               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
lines = open(control).read().split("\n")
files = lines[2:2 + int(lines[0])]
edges = {}
for line in lines[2 + len(files):]:
    p = line.split()
    if p and p[0] == "COV":
        edges[files[int(p[1])]] = set(p[2:])
out = subprocess.run(["cargo", "run", "-q", "--example", "corpus", "--", "verdict", target, *files],
                     check=True, capture_output=True, text=True).stdout
verdict = {path: v for v, path in (l.split(" ", 1) for l in out.splitlines())}
every = set().union(*edges.values())
keep = [f for f in files if verdict[f] != "Undecodable"]
left = every - set().union(*(edges.get(f, set()) for f in keep))
rest = [f for f in files if verdict[f] == "Undecodable" and f in edges]
while left and len(keep) < cap:
    best = max(rest, key=lambda f: (len(edges[f] & left), -os.path.getsize(f)))
    if not edges[best] & left:
        break
    keep.append(best)
    left -= edges[best]
for f in set(files) - set(keep):
    os.remove(f)
print(f"{target}: kept {len(keep)} of {len(files)} files "
      f"({sum(verdict[f] != 'Undecodable' for f in keep)} decodable), "
      f"{len(every) - len(left)} of {len(every)} edges, "
      f"{sum(os.path.getsize(f) for f in keep)} bytes")
