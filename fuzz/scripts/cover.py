#!/usr/bin/env python3
"""Usage: cover.py TARGET IN_DIR OUT_DIR [MAX_FILES]

A smaller corpus than `cargo fuzz cmin`: libFuzzer's merge keeps every input that adds an edge,
smallest first, which leaves many small files. This measures each input of IN_DIR alone (one
`-merge_inner=1` step each: the edges it covers) and copies to OUT_DIR, largest gain first, the
inputs that cover every edge any of them covers (at most MAX_FILES, default 300). Run it on the
output of `-merge=1` (a few thousand inputs take a few minutes)."""
import os, pathlib, shutil, subprocess, sys, tempfile

target, src, out = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
cap = int(sys.argv[4]) if len(sys.argv) > 4 else 300
binary = pathlib.Path(__file__).resolve().parents[1] / "target/x86_64-unknown-linux-gnu/release" / target
cov = {}
steps = []
with tempfile.TemporaryDirectory() as tmp:
    control = os.path.join(tmp, "control")
    for f in sorted(src.iterdir()):
        with open(control, "w") as c:
            c.write(f"1\n0\n{f}\n")
        subprocess.run(["nice", "-n", "19", str(binary), "-merge_inner=1", f"-merge_control_file={control}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for line in open(control):
            parts = line.split()
            if parts and parts[0] == "COV":
                cov[f] = set(map(int, parts[2:]))
seen = set().union(*cov.values()) if cov else set()
covered, chosen = set(), []
while len(chosen) < cap and cov:
    best = max(cov, key=lambda f: (len(cov[f] - covered), -f.stat().st_size))
    if not cov[best] - covered:
        break
    covered |= cov.pop(best)
    chosen.append(best)
    if len(chosen) % 100 == 0:
        steps.append(f"{len(chosen)}: {len(covered)}")
out.mkdir(parents=True, exist_ok=True)
for f in chosen:
    shutil.copy(f, out / f.name)
print(f"{target}: {len(chosen)} files cover {len(covered)} of {len(seen)} edges ({', '.join(steps)})")
